package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

func TestVersionKeygenHelp(t *testing.T) {
	dir := t.TempDir()
	r := runRecon(t, dir, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "recon ") {
		t.Errorf("recon version = %q (exit %d)", r.stdout, r.code)
	}
	a, b := runRecon(t, dir, "keygen"), runRecon(t, dir, "keygen")
	for _, r := range []cmdResult{a, b} {
		s := strings.TrimSpace(r.stdout)
		if len(s) != keys.EncodedLen || strings.ContainsAny(s, "+/") || !strings.HasSuffix(s, "=") {
			t.Errorf("recon keygen = %q, want 44 url-safe base64 characters with padding", s)
		}
		if _, err := keys.Parse(s); err != nil {
			t.Errorf("recon keygen printed an unparsable key: %v", err)
		}
	}
	if a.stdout == b.stdout {
		t.Error("two runs of recon keygen printed the same key")
	}
	help := runRecon(t, dir, "--help")
	for _, sub := range []string{"server", "submit", "status", "queue", "fetch", "keygen", "version"} {
		if !strings.Contains(help.stdout, sub) {
			t.Errorf("recon --help does not mention %s:\n%s", sub, help.stdout)
		}
	}
	for _, sub := range []string{"server", "submit", "status", "queue", "fetch"} {
		h := runRecon(t, dir, sub, "--help")
		if h.code != 0 || !strings.Contains(h.stdout, "--opts") {
			t.Errorf("recon %s --help (exit %d) does not explain --opts:\n%s", sub, h.code, h.stdout)
		}
	}
	if r := runRecon(t, dir, "submit", "--bogus"); r.code != exitUsage {
		t.Errorf("unknown flag: exit %d, want %d", r.code, exitUsage)
	}
	if r := runRecon(t, dir, "status", "a", "b"); r.code != exitUsage {
		t.Errorf("too many arguments: exit %d, want %d", r.code, exitUsage)
	}
}

// setOpt sets key to value in the config file at path, keeping every other
// line as it is. The key must already be in the file.
func setOpt(t *testing.T, path, key, value string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `\s*=.*$`)
	if !re.Match(b) {
		t.Fatalf("%s has no %s line", path, key)
	}
	b = re.ReplaceAllLiteral(b, []byte(key+" = "+value))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFreshConfigServerAndStatus runs `recon server` where there is no
// config file: it writes one with the documented defaults and fresh keys,
// and a client reading the same file connects. The test does not depend on
// the default ports being free: the first start stops before listening
// (recon_data, where its data would go, is a file), and the ports of the
// fresh file are then moved to free ones.
func TestFreshConfigServerAndStatus(t *testing.T) {
	dir := t.TempDir()
	optsPath := filepath.Join(dir, "recon.opts")
	writeFile(t, filepath.Join(dir, "recon_data"), "", 0o600)
	first := runRecon(t, dir, "server", "--opts", "recon.opts")
	if first.code == 0 {
		t.Fatalf("recon server started with recon_data a file:\n%s", first.stderr)
	}
	if !strings.Contains(first.stderr, "wrote a new config with fresh keys to "+optsPath) {
		t.Errorf("server did not say where it wrote a config:\n%s", first.stderr)
	}
	fi, err := os.Stat(optsPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("fresh config has mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, "default_recon_script.sh")); err != nil {
		t.Errorf("default script not written beside the fresh config: %v", err)
	}
	cfg, _, err := config.LoadServer(optsPath)
	if err != nil {
		t.Fatalf("the fresh config does not load: %v", err)
	}
	if cfg.Hostname != "localhost" || cfg.Port != 60000 || cfg.AdminHostname != "127.0.0.1" || cfg.AdminPort != 60003 {
		t.Errorf("fresh config listens on %s and %s, want the documented localhost:60000 and 127.0.0.1:60003", cfg.Addr(), cfg.AdminAddr())
	}
	if cfg.SharedKey.IsZero() || cfg.AdminSharedKey.IsZero() || cfg.SharedKey.Equal(cfg.AdminSharedKey) {
		t.Error("the fresh config does not have two distinct keys")
	}

	// Second start, on free loopback ports; then the client reads the same
	// file, with the port the server took.
	if err := os.Remove(filepath.Join(dir, "recon_data")); err != nil {
		t.Fatal(err)
	}
	setOpt(t, optsPath, "SERVER_HOSTNAME", "127.0.0.1")
	setOpt(t, optsPath, "SERVER_PORT", "0")
	setOpt(t, optsPath, "SERVER_ADMIN_PORT", "0")
	srv := startServer(t, dir, "recon.opts")
	_, port, _ := net.SplitHostPort(srv.clientAddr)
	setOpt(t, optsPath, "SERVER_PORT", port)
	// A client on the same machine reading the same file just connects.
	r := runRecon(t, dir, "status", "--json")
	if r.code != 0 {
		t.Fatalf("recon status: exit %d\n%s", r.code, r.stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	if _, ok := st["uptime_seconds"].(float64); !ok {
		t.Errorf("status --json has no uptime_seconds: %s", r.stdout)
	}
	if st["version"] == "" {
		t.Errorf("status --json has no version: %s", r.stdout)
	}
	// No key value reaches the log or the output.
	opts, _ := os.ReadFile(filepath.Join(dir, "recon.opts"))
	log, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	for _, line := range strings.Split(string(opts), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.Contains(k, "KEY") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue // an unset key (RELAY_SHARED_KEY) or the empty CLIENT_KEYS_FILE
			}
			if strings.Contains(string(log), v) || strings.Contains(first.stderr+srv.stderr.String(), v) || strings.Contains(r.stdout+r.stderr, v) {
				t.Errorf("the value of %s appears in the log or the output", strings.TrimSpace(k))
			}
		}
	}
}

func TestStatusHumanAndUnknownJob(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	r := runRecon(t, dir, "status", "--opts", "client.opts")
	if r.code != 0 || !strings.Contains(r.stdout, "uptime") || !strings.Contains(r.stdout, "server version") {
		t.Errorf("recon status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runRecon(t, dir, "status", "--opts", "client.opts", "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	if r.code == 0 || !strings.Contains(r.stderr, "no job") {
		t.Errorf("status of an unknown job: exit %d, stderr %q; want non-zero and 'no job'", r.code, r.stderr)
	}
	r = runRecon(t, dir, "queue", "--opts", "client.opts")
	if r.code != 0 || !strings.Contains(r.stdout, "no jobs") {
		t.Errorf("recon queue on an empty server: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestWrongKeyFailsClearly checks that a client with a wrong key is refused
// at once, not left to a timeout: the server's handshake and idle timeouts
// are 60 s and the client's own connect timeout is 15 s, so a refusal
// within 10 s, saying "authentication failed" and not "timeout", can only
// come from the server closing the connection when the first handshake
// message fails.
func TestWrongKeyFailsClearly(t *testing.T) {
	const (
		serverTimeout = 60 * time.Second // HANDSHAKE_TIMEOUT_SECONDS and IDLE_TIMEOUT_SECONDS below
		failWithin    = 10 * time.Second // well before serverTimeout and the client's 15 s
	)
	dir := t.TempDir()
	serverKey := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript),
		"HANDSHAKE_TIMEOUT_SECONDS = 60", "IDLE_TIMEOUT_SECONDS = 60")
	srv := startServer(t, dir, "recon.opts")
	wrongKey := keys.MustGenerate().Encode()
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, wrongKey)
	start := time.Now()
	r := runRecon(t, dir, "status", "--opts", "client.opts")
	took := time.Since(start)
	if r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
		t.Errorf("wrong key: exit %d, stderr %q; want failure saying authentication failed", r.code, r.stderr)
	}
	if strings.Contains(strings.ToLower(r.stderr), "timeout") || strings.Contains(strings.ToLower(r.stderr), "timed out") {
		t.Errorf("wrong key: the client waited for a timeout: %q", r.stderr)
	}
	if took >= failWithin {
		t.Errorf("wrong key refused after %s, want well before the %s timeouts (within %s)", took.Round(time.Millisecond), serverTimeout, failWithin)
	}
	for _, k := range []string{serverKey, wrongKey} {
		if strings.Contains(r.stdout+r.stderr, k) {
			t.Error("the wrong-key error shows a key value")
		}
	}
	// The admin port does not take the client role either.
	clientOpts(t, filepath.Join(dir, "admin-port.opts"), srv.adminAddr, keys.MustGenerate().Encode())
	if r := runRecon(t, dir, "status", "--opts", "admin-port.opts"); r.code == 0 {
		t.Error("a client request on the admin port succeeded")
	}
}

func TestServerRefusesBadKeys(t *testing.T) {
	k := keys.MustGenerate().Encode()
	tests := []struct {
		name string
		opts string
		want []string
	}{
		{"reused key", "SHARED_KEY = " + k + "\nSERVER_ADMIN_SHARED_KEY = " + k + "\n", []string{"SHARED_KEY", "SERVER_ADMIN_SHARED_KEY"}},
		{"placeholder", "SHARED_KEY = SET_YOUR_SHARED_KEY_HERE\nSERVER_ADMIN_SHARED_KEY = " + k + "\n", []string{"SHARED_KEY", "recon keygen"}},
		{"garbage key", "SHARED_KEY = not-a-key\nSERVER_ADMIN_SHARED_KEY = " + k + "\n", []string{"SHARED_KEY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "recon.opts"), "SERVER_PORT = 0\nSERVER_ADMIN_PORT = 0\n"+tt.opts, 0o600)
			r := runRecon(t, dir, "server", "--opts", "recon.opts")
			if r.code == 0 {
				t.Fatalf("server started with %s", tt.name)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not mention %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, k) {
				t.Errorf("stderr shows the key value")
			}
		})
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestSubmitWaitFetch(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
printf "%s" "${RECON_OPT_METHOD:-}" > "$3/method.txt"
ls -A > "$3/cwd-listing.txt"
if [ "${RECON_OPT_FAIL:-}" = yes ]; then echo "deliberate failure" >&2; exit 4; fi
`)
	key := serverOpts(t, dir, script)
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	writeFile(t, filepath.Join(dir, "P00000.7"), strings.Repeat("raw data ", 100000), 0o644)
	writeFile(t, filepath.Join(dir, "notes.txt"), "", 0o644) // an empty file travels too

	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--json", "--output", "out",
		"--option", "method=$(touch x); rm -rf /", "P00000.7", "notes.txt")
	if r.code != 0 {
		t.Fatalf("recon submit: exit %d\n%s", r.code, r.stderr)
	}
	var res struct {
		JobID   string `json:"job_id"`
		State   string `json:"state"`
		Results []struct {
			Name, SHA256, Path string
			Size               int64
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("submit --json output is not one JSON document: %v\n%s", err, r.stdout)
	}
	if res.State != "succeeded" || len(res.Results) != 4 {
		t.Fatalf("job %+v, want succeeded with 4 results", res)
	}
	for _, f := range res.Results {
		if f.Path == "" || sha(t, f.Path) != f.SHA256 {
			t.Errorf("result %s at %q does not match its SHA-256", f.Name, f.Path)
		}
	}
	if sha(t, filepath.Join(dir, "out", "P00000.7.out")) != sha(t, filepath.Join(dir, "P00000.7")) {
		t.Error("P00000.7 did not come back unchanged")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out", "method.txt")); string(b) != "$(touch x); rm -rf /" {
		t.Errorf("option arrived as %q", b)
	}
	// A shell running the option would create x in its working directory:
	// the script's (the job's input dir, listed by the script since it is
	// removed with the job), or the server's (dir, which holds its data
	// dirs and the client's output too).
	listing, err := os.ReadFile(filepath.Join(dir, "out", "cwd-listing.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(listing), "P00000.7") {
		t.Errorf("the script's working directory is not its input dir: it holds %q", listing)
	}
	if slices.Contains(strings.Split(string(listing), "\n"), "x") {
		t.Error("an option value was run as shell text: x in the script's working directory")
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "x" {
			t.Errorf("an option value was run as shell text: %s exists", p)
		}
		return nil
	})
	if r.stderr != "" {
		t.Logf("stderr of submit --json: %s", r.stderr)
	}

	// status of the finished job; fetching again says it was delivered.
	st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", res.JobID)
	if st.code != 0 || !strings.Contains(st.stdout, `"state": "succeeded"`) {
		t.Errorf("status %s: exit %d\n%s%s", res.JobID, st.code, st.stdout, st.stderr)
	}

	// --no-wait, then fetch into the default download dir.
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "P00000.7")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" {
		t.Fatalf("submit --no-wait: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	r = runRecon(t, dir, "fetch", "--opts", "client.opts", id)
	if r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "downloads", id, "P00000.7.out")); err != nil {
		t.Errorf("fetch did not write into CLIENT_DOWNLOAD_DIR/<job_id>: %v\n%s", err, r.stdout)
	}
	q := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
	var queue struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(q.stdout), &queue); err != nil || len(queue.Jobs) != 2 {
		t.Errorf("queue --json = %v (%v), want the 2 recent jobs", q.stdout, err)
	}

	// A failing job: submit exits 3, and the error is shown.
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--option", "FAIL=yes", "--output", "failed", "P00000.7")
	if r.code != exitJobFailed || !strings.Contains(r.stdout, "deliberate failure") {
		t.Errorf("failing job: exit %d, want %d with the script's stderr\n%s%s", r.code, exitJobFailed, r.stdout, r.stderr)
	}
}

// TestKill9AndRestart kills a real server process with jobs queued and one
// running; after a restart every job completes and can be fetched, and the
// same submission id returns the same job.
func TestKill9AndRestart(t *testing.T) {
	dir := t.TempDir()
	// The script blocks until the test creates the release file, and counts
	// its starts.
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
echo start >> "`+dir+`/starts-$RECON_JOB_ID"
while [ ! -e "`+dir+`/release" ]; do sleep 0.05; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
	key := serverOpts(t, dir, script, "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	var ids []string
	for i := range 3 {
		name := filepath.Join(dir, "scan"+string(rune('a'+i))+".7")
		writeFile(t, name, strings.Repeat(string(rune('a'+i)), 1000+i), 0o644)
		r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "--submission-id", "sub-"+string(rune('a'+i)), name)
		if r.code != 0 {
			t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	servertest.Eventually(t, 20*time.Second, "first job running", func() bool {
		_, err := os.Stat(filepath.Join(dir, "starts-"+ids[0]))
		return err == nil
	})
	srv.kill9(t)

	// The restarted server listens on new ports; the client follows.
	srv2 := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv2.clientAddr, key)
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "--submission-id", "sub-b", filepath.Join(dir, "scanb.7"))
	if got := strings.TrimSpace(r.stdout); r.code != 0 || got != ids[1] {
		t.Errorf("resubmission with the same submission id gave %q (exit %d), want %s", got, r.code, ids[1])
	}
	writeFile(t, filepath.Join(dir, "release"), "", 0o644)
	for i, id := range ids {
		out := filepath.Join(dir, "out-"+id)
		r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", out, id)
		if r.code != 0 {
			t.Fatalf("fetch %s after restart: exit %d\n%s", id, r.code, r.stderr)
		}
		want := strings.Repeat(string(rune('a'+i)), 1000+i)
		got, err := os.ReadFile(filepath.Join(out, "scan"+string(rune('a'+i))+".7.out"))
		if err != nil || string(got) != want {
			t.Errorf("job %s result = %d bytes (%v), want %d", id, len(got), err, len(want))
		}
	}
	starts, _ := os.ReadFile(filepath.Join(dir, "starts-"+ids[0]))
	if n := strings.Count(string(starts), "start"); n != 2 {
		t.Errorf("the job running at the crash started %d times, want 2", n)
	}
	st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", ids[0])
	if !strings.Contains(st.stdout, `"attempts": 2`) {
		t.Errorf("job running at the crash: %s", st.stdout)
	}
}

// TestClientKilledMidFile kills a submitting client in the middle of a
// file: nothing is queued, and what was received, kept for a resume, is
// removed once UPLOAD_RESUME_HOURS (here 1.8 s) has passed.
func TestClientKilledMidFile(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "UPLOAD_RESUME_HOURS = 0.0005")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	big := filepath.Join(dir, "big.7")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for range 1024 { // 1 GiB: far more than is sent before the kill
		f.Write(chunk)
	}
	f.Close()
	cmd := exec.Command(reconBin, "submit", "--opts", "client.opts", "--no-wait", big)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inputs := filepath.Join(dir, "data", "inputs")
	servertest.Eventually(t, 30*time.Second, "upload started", func() bool {
		m, _ := filepath.Glob(filepath.Join(inputs, ".incoming-*", "part:*"))
		return len(m) > 0
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	servertest.Eventually(t, 30*time.Second, "upload dir removed", func() bool {
		m, _ := filepath.Glob(filepath.Join(inputs, "*"))
		h, _ := filepath.Glob(filepath.Join(inputs, ".*"))
		return len(m)+len(h) == 0
	})
	r := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
	if r.code != 0 || strings.Contains(r.stdout, "job_id") {
		t.Errorf("queue after a broken upload: %s", r.stdout)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	for _, want := range []string{"upload broken; kept for resuming", "broken upload expired"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("server log lacks %q", want)
		}
	}
}

// TestBARTPhantom reconstructs a BART phantom through the server with the
// default script and compares it with a local BART reconstruction.
func TestBARTPhantom(t *testing.T) {
	if _, err := exec.LookPath("bart"); err != nil {
		servertest.SkipUnlessStrict(t, "bart is not installed (apt-get install bart; make deps)")
	}
	repo, _ := filepath.Abs(filepath.Join("..", ".."))
	dir := t.TempDir()
	key := serverOpts(t, dir, filepath.Join(repo, "default_recon_script.sh"))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	bart := func(args ...string) {
		t.Helper()
		cmd := exec.Command("bart", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bart %v: %v\n%s", args, err, out)
		}
	}
	bart("phantom", "-k", "-s", "8", "-x", "128", "phantom")
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "phantom.cfl", "phantom.hdr")
	if r.code != 0 {
		t.Fatalf("submit phantom: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, f := range []string{"phantom.png", "phantom.dcm", "phantom_recon.cfl", "phantom_recon.hdr"} {
		if _, err := os.Stat(filepath.Join(dir, "out", f)); err != nil {
			t.Errorf("result %s missing: %v", f, err)
		}
	}
	// The same reconstruction, locally.
	bart("fft", "-u", "-i", "3", "phantom", "coilimg")
	bart("rss", "8", "coilimg", "local")
	if sha(t, filepath.Join(dir, "local.cfl")) != sha(t, filepath.Join(dir, "out", "phantom_recon.cfl")) {
		t.Error("the server's reconstruction differs from the local BART reconstruction")
	}
}
