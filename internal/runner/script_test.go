package runner_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image/png"
	"io/fs"
	"log/slog"
	"math"
	"math/cmplx"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	recon "github.com/recon-mri/recon"
	"github.com/recon-mri/recon/internal/runner"
	"github.com/recon-mri/recon/internal/servertest"
)

// Tests of the shipped default script (recon.DefaultScript), run through
// Run as the server runs it.

func installDefaultScript(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "default_recon_script.sh")
	writeExecutable(t, path, recon.DefaultScript)
	return path
}

// reconBuild is the recon binary, built once for the tests whose script
// writes DICOM images with `recon dicom` (the server passes its own
// executable as RECON_BIN).
var reconBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if reconBuild.dir != "" {
		os.RemoveAll(reconBuild.dir)
	}
	os.Exit(code)
}

func reconBinary(t *testing.T) string {
	t.Helper()
	reconBuild.once.Do(func() {
		reconBuild.dir, reconBuild.err = os.MkdirTemp("", "recon-runner-test-")
		if reconBuild.err != nil {
			return
		}
		reconBuild.path = filepath.Join(reconBuild.dir, "recon")
		out, err := exec.Command("go", "build", "-o", reconBuild.path, "github.com/recon-mri/recon/cmd/recon").CombinedOutput()
		if err != nil {
			reconBuild.err = fmt.Errorf("build recon: %v\n%s", err, out)
		}
	})
	if reconBuild.err != nil {
		t.Fatal(reconBuild.err)
	}
	return reconBuild.path
}

func needBART(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bart"); err != nil {
		servertest.SkipUnlessStrict(t, "bart is not installed (Debian package bart; make deps): no BART reconstruction test")
	}
}

// bart runs one BART command in dir.
func bart(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("bart", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bart %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// runDefault runs the default script on in through Run.
func runDefault(t *testing.T, in, out string, opts map[string]string) (runner.Result, *capture) {
	t.Helper()
	h := newCapture()
	res, err := runner.Run(context.Background(), runner.Spec{
		Script:    installDefaultScript(t),
		InputDir:  in,
		OutputDir: out,
		JobID:     "job-default",
		Options:   opts,
		Env:       []string{"RECON_BIN=" + reconBinary(t)},
		Timeout:   5 * time.Minute,
		Logger:    slog.New(h),
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, h
}

// snapshot describes every entry of dir: mode, size, modification time
// and SHA-256 of regular files.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %v", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		m[path] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readCFL reads a BART NAME.hdr/NAME.cfl pair.
func readCFL(t *testing.T, base string) ([]int, []complex64) {
	t.Helper()
	hdr, err := os.ReadFile(base + ".hdr")
	if err != nil {
		t.Fatal(err)
	}
	var dims []int
	sc := bufio.NewScanner(bytes.NewReader(hdr))
	for sc.Scan() {
		if sc.Text() == "# Dimensions" && sc.Scan() {
			for _, f := range strings.Fields(sc.Text()) {
				n, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("%s.hdr: %v", base, err)
				}
				dims = append(dims, n)
			}
		}
	}
	n := 1
	for _, d := range dims {
		n *= d
	}
	raw, err := os.ReadFile(base + ".cfl")
	if err != nil {
		t.Fatal(err)
	}
	if len(dims) == 0 || len(raw) != 8*n {
		t.Fatalf("%s: dims %v but %d bytes of data", base, dims, len(raw))
	}
	data := make([]complex64, n)
	for i := range data {
		re := math.Float32frombits(binary.LittleEndian.Uint32(raw[8*i:]))
		im := math.Float32frombits(binary.LittleEndian.Uint32(raw[8*i+4:]))
		data[i] = complex(re, im)
	}
	return dims, data
}

// compareCFL checks that got equals want (BART pairs) within a tolerance
// relative to want's largest magnitude.
func compareCFL(t *testing.T, got, want string, rel float64) {
	t.Helper()
	gd, g := readCFL(t, got)
	wd, w := readCFL(t, want)
	if diff := cmp.Diff(wd, gd); diff != "" {
		t.Fatalf("%s dimensions (-want +got):\n%s", filepath.Base(got), diff)
	}
	var peak, worst float64
	for i := range w {
		peak = max(peak, cmplx.Abs(complex128(w[i])))
		worst = max(worst, cmplx.Abs(complex128(g[i]-w[i])))
	}
	if peak == 0 || worst > rel*peak {
		t.Errorf("%s differs from the reference: largest difference %g, peak %g", filepath.Base(got), worst, peak)
	}
}

// checkPhantomPNG decodes a PNG of the Shepp-Logan phantom and checks that
// it looks like one: dark corners, a bright rim and a brighter middle than
// the border.
func checkPhantomPNG(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() != size || b.Dy() != size {
		t.Fatalf("%s is %dx%d, want %dx%d", path, b.Dx(), b.Dy(), size, size)
	}
	lum := func(x, y int) float64 {
		r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return float64(r+g+bl) / 3 / 0xffff
	}
	mean := func(x0, y0, x1, y1 int) float64 {
		var s float64
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				s += lum(x, y)
			}
		}
		return s / float64((x1-x0)*(y1-y0))
	}
	q := size / 8
	corners := (mean(0, 0, q, q) + mean(size-q, 0, size, q) + mean(0, size-q, q, size) + mean(size-q, size-q, size, size)) / 4
	centre := mean(size/2-q, size/2-q, size/2+q, size/2+q)
	// On the middle row the brightest pixel is the skull rim, where the
	// phantom's outer ellipse (semi-axis 0.69 of half the field of view)
	// crosses it.
	brightest, at := 0.0, 0
	for x := range size {
		if l := lum(x, size/2); l > brightest {
			brightest, at = l, x
		}
	}
	rim := math.Abs(float64(at-size/2)) / float64(size/2)
	if corners > 0.02 || centre < 0.03 || brightest < 3*centre || rim < 0.6 || rim > 0.8 {
		t.Errorf("%s does not look like a phantom: corners %.3f, centre %.3f, brightest on the middle row %.3f at %.2f of the half width",
			path, corners, centre, brightest, rim)
	}
}

func TestDefaultScriptFFT(t *testing.T) {
	t.Parallel()
	needBART(t)
	in, out := jobDirs(t)
	bart(t, in, "phantom", "-k", "-s", "8", "-x", "64", "phantom")
	bart(t, in, "phantom", "-k", "-x", "64", "single")
	before := snapshot(t, in)

	res, logs := runDefault(t, in, out, nil)
	if !res.Success() {
		t.Fatalf("Run = %+v", res)
	}
	if diff := cmp.Diff(before, snapshot(t, in)); diff != "" {
		t.Errorf("the script changed the input dir (-before +after):\n%s", diff)
	}
	files, skipped, err := runner.CollectResults(out, runner.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	want := []string{"phantom.dcm", "phantom.png", "phantom_recon.cfl", "phantom_recon.hdr", "single.dcm", "single.png", "single_recon.cfl", "single_recon.hdr"}
	if diff := cmp.Diff(want, names); diff != "" || len(skipped) != 0 {
		t.Errorf("results (-want +got):\n%s\nskipped: %v", diff, skipped)
	}
	if !strings.Contains(strings.Join(logs.lines("stdout"), "\n"), "phantom: 8 coil(s)") {
		t.Errorf("stdout does not say what the script does: %q", logs.lines("stdout"))
	}

	// The same reconstruction, done here.
	ref := t.TempDir()
	bart(t, ref, "fft", "-u", "-i", "3", filepath.Join(in, "phantom"), "coils")
	bart(t, ref, "rss", "8", "coils", "phantom")
	bart(t, ref, "toimg", "phantom", "phantom.png")
	bart(t, ref, "toimg", "phantom", "bart.dcm")
	bart(t, ref, "fft", "-u", "-i", "3", filepath.Join(in, "single"), "single")
	bart(t, ref, "toimg", "single", "single.png")

	compareCFL(t, filepath.Join(out, "phantom_recon"), filepath.Join(ref, "phantom"), 1e-6)
	compareCFL(t, filepath.Join(out, "single_recon"), filepath.Join(ref, "single"), 1e-6)
	for _, name := range []string{"phantom.png", "single.png"} {
		got, err1 := os.ReadFile(filepath.Join(out, name))
		want, err2 := os.ReadFile(filepath.Join(ref, name))
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from bart toimg of the reference (%v, %v)", name, err1, err2)
		}
	}
	checkPhantomPNG(t, filepath.Join(out, "phantom.png"), 64)
	checkPhantomPNG(t, filepath.Join(out, "single.png"), 64)
	// phantom.dcm is an MR image (recon dicom) with the pixels bart toimg
	// writes, both scaled so the brightest is 65535: the pixel data is the
	// last element of either file.
	dcm, err := os.ReadFile(filepath.Join(out, "phantom.dcm"))
	if err != nil || len(dcm) < 132 || string(dcm[128:132]) != "DICM" || !bytes.Contains(dcm, []byte("1.2.840.10008.5.1.4.1.1.4\x00")) {
		t.Fatalf("phantom.dcm is not a DICOM MR image (%v)", err)
	}
	bartDCM, err := os.ReadFile(filepath.Join(ref, "bart.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	const pixBytes = 2 * 64 * 64
	gotPix, wantPix := dcm[len(dcm)-pixBytes:], bartDCM[len(bartDCM)-pixBytes:]
	for i := 0; i < pixBytes; i += 2 {
		g, w := int(binary.LittleEndian.Uint16(gotPix[i:])), int(binary.LittleEndian.Uint16(wantPix[i:]))
		if g-w > 1 || w-g > 1 {
			t.Fatalf("phantom.dcm pixel %d is %d, bart toimg's %d", i/2, g, w)
		}
	}
}

// TestDefaultScriptWithoutRecon: with BART pairs to reconstruct, the
// script needs recon for the DICOM images; without RECON_BIN and with no
// recon on PATH it says so before it starts.
func TestDefaultScriptWithoutRecon(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, tool := range []string{"bash", "mkdir"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	writeExecutable(t, filepath.Join(bin, "bart"), []byte("#!/bin/sh\nexit 1\n")) // only looked for
	in, out := jobDirs(t)
	put(t, in, "k.cfl", 8)
	put(t, in, "k.hdr", 40)
	code, stderr := runDirect(t, []string{"PATH=" + bin}, in, "--output-dir", out)
	if code == 0 || !strings.Contains(stderr, "recon not found (it writes the DICOM images)") {
		t.Errorf("exit %d, stderr %q; want failure saying recon is needed", code, stderr)
	}
}

func TestDefaultScriptPICS(t *testing.T) {
	t.Parallel()
	needBART(t)
	in, out := jobDirs(t)
	bart(t, in, "phantom", "-k", "-s", "8", "-x", "64", "phantom")
	pfile := put(t, in, "P00000.7", 5000)
	before := snapshot(t, in)

	res, _ := runDefault(t, in, out, map[string]string{"method": "pics"})
	if !res.Success() {
		t.Fatalf("Run = %+v", res)
	}
	if diff := cmp.Diff(before, snapshot(t, in)); diff != "" {
		t.Errorf("the script changed the input dir (-before +after):\n%s", diff)
	}
	for _, name := range []string{"phantom.png", "phantom.dcm", "phantom_recon.hdr"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Error(err)
		}
	}
	ref := t.TempDir()
	bart(t, ref, "ecalib", "-m1", filepath.Join(in, "phantom"), "sens")
	bart(t, ref, "pics", "-l1", "-r0.01", filepath.Join(in, "phantom"), "sens", "phantom")
	compareCFL(t, filepath.Join(out, "phantom_recon"), filepath.Join(ref, "phantom"), 1e-3)
	checkPhantomPNG(t, filepath.Join(out, "phantom.png"), 64)

	// The P-file is not a BART pair: the manifest lists every input.
	cfl := hashFile(t, filepath.Join(in, "phantom.cfl"))
	hdr := hashFile(t, filepath.Join(in, "phantom.hdr"))
	wantManifest := []string{pfile.Name + "\t5000\t" + pfile.SHA256, cfl, hdr}
	if diff := cmp.Diff(wantManifest, readManifest(t, out)); diff != "" {
		t.Errorf("manifest.txt (-want +got):\n%s", diff)
	}
}

func hashFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%s\t%d\t%s", filepath.Base(path), len(data), hex.EncodeToString(sum[:]))
}

// readManifest returns manifest.txt's entry lines.
func readManifest(t *testing.T, out string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "manifest.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "# ") {
		t.Errorf("manifest.txt has no header line: %q", lines[0])
		return lines
	}
	return lines[1:]
}

func TestDefaultScriptManifest(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	var want []string
	for _, f := range []runner.ResultFile{
		put(t, in, "P00000.7", 300_000),
		put(t, in, "lonely.cfl", 64), // a .cfl without its .hdr is no BART pair
		put(t, in, "notes with spaces.txt", 12),
		put(t, in, "E12345S3I1.MR", 0),
	} {
		want = append(want, fmt.Sprintf("%s\t%d\t%s", f.Name, f.Size, f.SHA256))
	}
	want = []string{want[3], want[0], want[1], want[2]} // sorted by name
	before := snapshot(t, in)

	res, _ := runDefault(t, in, out, map[string]string{"method": "fft"})
	if !res.Success() {
		t.Fatalf("Run = %+v", res)
	}
	if diff := cmp.Diff(want, readManifest(t, out)); diff != "" {
		t.Errorf("manifest.txt (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, snapshot(t, in)); diff != "" {
		t.Errorf("the script changed the input dir (-before +after):\n%s", diff)
	}
	files, _, err := runner.CollectResults(out, runner.Limits{})
	if err != nil || len(files) != 1 || files[0].Name != "manifest.txt" {
		t.Errorf("results = %v, %v; want manifest.txt only (no work folder left)", files, err)
	}
}

func TestDefaultScriptBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"method": "bogus $(touch x)"}, "unknown method"},
		{map[string]string{"method": "pics", "threads": "0; touch x"}, "threads must be a whole number"},
	}
	for _, tc := range tests {
		in, out := jobDirs(t)
		put(t, in, "P00000.7", 10)
		res, _ := runDefault(t, in, out, tc.opts)
		if res.ExitCode == 0 || !strings.Contains(res.StderrTail, tc.want) {
			t.Errorf("options %q: Run = %+v, want failure with %q", tc.opts, res, tc.want)
		}
		for _, dir := range []string{in, out, filepath.Dir(in)} {
			if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
				t.Errorf("options %q: an option value was executed", tc.opts)
			}
		}
	}
}

// runDirect runs the default script with explicit argv and environment.
func runDirect(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(installDefaultScript(t), args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("run default script: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func TestDefaultScriptWithoutBART(t *testing.T) {
	t.Parallel()
	// A PATH with bash and what the script needs before it looks for bart.
	bin := t.TempDir()
	for _, tool := range []string{"bash", "mkdir"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	in, out := jobDirs(t)
	put(t, in, "k.cfl", 8)
	put(t, in, "k.hdr", 40)
	code, stderr := runDirect(t, []string{"PATH=" + bin}, in, "--output-dir", out)
	if code == 0 || !strings.Contains(stderr, "bart not found: install the Debian package bart") {
		t.Errorf("exit %d, stderr %q; want failure naming the bart package", code, stderr)
	}
}

func TestDefaultScriptUsage(t *testing.T) {
	t.Parallel()
	env := []string{"PATH=" + os.Getenv("PATH")}
	in, out := jobDirs(t)
	put(t, in, "P00000.7", 10)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage:"},
		{[]string{in}, 2, "no --output-dir"},
		{[]string{in, "--output-dir"}, 2, "--output-dir needs a directory"},
		{[]string{in, "--output-dir="}, 2, "no --output-dir"},
		{[]string{"--output-dir", out}, 2, "no input dir"},
		{[]string{in, in, "--output-dir", out}, 2, "more than one input dir"},
		{[]string{in, "--bogus", "--output-dir", out}, 2, "unknown option"},
		{[]string{filepath.Join(in, "missing"), "--output-dir", out}, 1, "not a directory"},
		{[]string{t.TempDir(), "--output-dir", out}, 1, "no input files"},
	}
	for _, tc := range tests {
		code, stderr := runDirect(t, env, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("args %q: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	code, stderr := runDirect(t, env, in, "--output-dir="+out)
	if code != 0 {
		t.Fatalf("--output-dir=DIR: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.txt")); err != nil {
		t.Errorf("--output-dir=DIR: %v", err)
	}
}

// TestDefaultScriptEmbedded checks that the embedded script is the file in
// the repository, executable there, with the documented calling convention.
func TestDefaultScriptEmbedded(t *testing.T) {
	t.Parallel()
	fi, err := os.Stat("../../default_recon_script.sh")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("default_recon_script.sh is not executable: %v", fi.Mode())
	}
	data, err := os.ReadFile("../../default_recon_script.sh")
	if err != nil || !bytes.Equal(data, recon.DefaultScript) {
		t.Errorf("recon.DefaultScript differs from default_recon_script.sh (%v)", err)
	}
	if !bytes.HasPrefix(recon.DefaultScript, []byte("#!/usr/bin/env bash\n")) || !bytes.Contains(recon.DefaultScript, []byte("set -euo pipefail")) {
		t.Error("the default script lost its bash shebang or set -euo pipefail")
	}
}
