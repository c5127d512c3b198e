package runner_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/zeebo/blake3"

	"github.com/recon-mri/recon/internal/runner"
)

// put writes a file of n random bytes (parents created) and returns its
// expected ResultFile.
func put(t *testing.T, root, name string, n int) runner.ResultFile {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	path := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum, b3 := sha256.Sum256(data), blake3.Sum256(data)
	return runner.ResultFile{Name: name, Size: int64(n), SHA256: hex.EncodeToString(sum[:]), BLAKE3: hex.EncodeToString(b3[:])}
}

func TestCollectResults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := []runner.ResultFile{
		put(t, dir, "a.txt", 100),
		put(t, dir, "a/b.bin", 70_000),
		put(t, dir, "empty", 0),
		put(t, dir, "image.dcm", 8508),
		put(t, dir, "sub/Grüße 🧲.png", 17), // byte order: 'G' < 'd'
		put(t, dir, "sub/deeper/c.cfl", 1<<20+3),
	}
	wantSkipped := []runner.Skipped{
		{"bad\\x01name", "name contains a control character"},
		{"bad\\xffname", "name is not valid UTF-8"},
		{"ctl\\ndir", "name contains a control character"},
		{"fifo", "named pipe"},
		{"hard1", "hard link (2 links)"},
		{"hard2", "hard link (2 links)"},
		{"link-dir", "symbolic link"},
		{"link-escape", "symbolic link"},
		{"link-inside", "symbolic link"},
		{"sock", "socket"},
		{"sub/dangling", "symbolic link"},
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	must(os.Symlink("/etc/passwd", at("link-escape")))
	must(os.Symlink("a.txt", at("link-inside")))
	must(os.Symlink("sub", at("link-dir")))
	must(os.Symlink("../nowhere", at("sub/dangling")))
	must(syscall.Mkfifo(at("fifo"), 0o600))
	put(t, dir, "hard1", 5)
	must(os.Link(at("hard1"), at("hard2")))
	put(t, dir, "bad\x01name", 1)
	put(t, dir, "bad\xffname", 1)
	put(t, dir, "ctl\ndir/inside", 1)
	ln, err := net.Listen("unix", at("sock"))
	must(err)
	defer ln.Close()
	if err := syscall.Mknod(at("device"), syscall.S_IFCHR|0o600, 1<<8|3); err == nil {
		wantSkipped = append(wantSkipped, runner.Skipped{Name: "device", Reason: "character device"})
	} else {
		t.Logf("no device node test (mknod: %v)", err)
	}

	files, skipped, err := runner.CollectResults(dir, runner.Limits{MaxFiles: len(want), MaxBytes: 1<<20 + 100 + 70_000 + 8508 + 3 + 17})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	sortSkipped := cmpopts.SortSlices(func(a, b runner.Skipped) bool { return a.Name < b.Name })
	if diff := cmp.Diff(wantSkipped, skipped, sortSkipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	for i := 1; i < len(skipped); i++ {
		if skipped[i-1].Name >= skipped[i].Name {
			t.Errorf("skipped not sorted: %q before %q", skipped[i-1].Name, skipped[i].Name)
		}
	}
}

func TestCollectResultsEmptyAndMissing(t *testing.T) {
	t.Parallel()
	files, skipped, err := runner.CollectResults(t.TempDir(), runner.Limits{})
	if err != nil || len(files) != 0 || len(skipped) != 0 {
		t.Errorf("empty dir: %v, %v, %v", files, skipped, err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if _, _, err := runner.CollectResults(missing, runner.Limits{}); err == nil || strings.Contains(err.Error(), missing) {
		t.Errorf("missing dir: %v; want an error that does not name the server's path", err)
	}
}

func TestCollectResultsValidName(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := put(t, dir, "ok.png", 3)
	put(t, dir, "sub/CON.txt", 3)
	reject := func(name string) error {
		if strings.Contains(name, "CON") {
			return fmt.Errorf("result name %q is a reserved device name", name)
		}
		return nil
	}
	files, skipped, err := runner.CollectResults(dir, runner.Limits{ValidName: reject})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]runner.ResultFile{want}, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	wantSkipped := []runner.Skipped{{"sub/CON.txt", `result name "sub/CON.txt" is a reserved device name`}}
	if diff := cmp.Diff(wantSkipped, skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
}

func TestCollectResultsLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	put(t, dir, "one", 10)
	put(t, dir, "two/three", 10)
	put(t, dir, "two/four", 10)
	deep := t.TempDir()
	put(t, deep, strings.Repeat("d/", runner.MaxDepth+1)+"f", 1)
	many := t.TempDir()
	for i := range 1011 {
		if err := os.Mkdir(filepath.Join(many, fmt.Sprintf("d%04d", i)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		dir  string
		lim  runner.Limits
		want string
	}{
		{"files", dir, runner.Limits{MaxFiles: 2}, "more than 2 result files"},
		{"bytes", dir, runner.Limits{MaxBytes: 29}, "exceed 29 bytes"},
		{"depth", deep, runner.Limits{}, fmt.Sprintf("more than %d levels", runner.MaxDepth)},
		{"entries", many, runner.Limits{MaxFiles: 1}, "more than 1010 entries"},
	}
	for _, tc := range tests {
		files, _, err := runner.CollectResults(tc.dir, tc.lim)
		if !errors.Is(err, runner.ErrLimit) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CollectResults = %d files, %v; want ErrLimit with %q", tc.name, len(files), err, tc.want)
		}
	}
	files, _, err := runner.CollectResults(dir, runner.Limits{MaxFiles: 3, MaxBytes: 30})
	if err != nil || len(files) != 3 {
		t.Errorf("at the limits: %d files, %v; want 3, nil", len(files), err)
	}
}
