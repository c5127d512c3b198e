package client_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
)

// TestDeriveSubmissionID: the id depends on every file's path, size,
// modification time and hash and on the options, not on the order of the
// files; without options it is the id recon watch has always derived.
func TestDeriveSubmissionID(t *testing.T) {
	t0 := time.Unix(1700000000, 123)
	a := client.SubmissionFile{Path: "/d/a.cfl", Size: 10, ModTime: t0, SHA256: "aa"}
	b := client.SubmissionFile{Path: "/d/a.hdr", Size: 20, ModTime: t0}
	base := client.DeriveSubmissionID("cli", []client.SubmissionFile{a, b}, map[string]string{"m": "pics"})
	if got := client.DeriveSubmissionID("cli", []client.SubmissionFile{b, a}, map[string]string{"m": "pics"}); got != base {
		t.Errorf("order of the files changes the id: %s, %s", got, base)
	}
	changed := func(f func(*client.SubmissionFile)) []client.SubmissionFile {
		c := a
		f(&c)
		return []client.SubmissionFile{c, b}
	}
	seen := map[string]string{base: "base"}
	for name, id := range map[string]string{
		"path":      client.DeriveSubmissionID("cli", changed(func(f *client.SubmissionFile) { f.Path = "/e/a.cfl" }), map[string]string{"m": "pics"}),
		"size":      client.DeriveSubmissionID("cli", changed(func(f *client.SubmissionFile) { f.Size++ }), map[string]string{"m": "pics"}),
		"mtime":     client.DeriveSubmissionID("cli", changed(func(f *client.SubmissionFile) { f.ModTime = f.ModTime.Add(time.Nanosecond) }), map[string]string{"m": "pics"}),
		"sha256":    client.DeriveSubmissionID("cli", changed(func(f *client.SubmissionFile) { f.SHA256 = "ab" }), map[string]string{"m": "pics"}),
		"value":     client.DeriveSubmissionID("cli", []client.SubmissionFile{a, b}, map[string]string{"m": "sense"}),
		"key":       client.DeriveSubmissionID("cli", []client.SubmissionFile{a, b}, map[string]string{"n": "pics"}),
		"split":     client.DeriveSubmissionID("cli", []client.SubmissionFile{a, b}, map[string]string{"m": "pi", "mcs": ""}),
		"none":      client.DeriveSubmissionID("cli", []client.SubmissionFile{a, b}, nil),
		"prefix":    client.DeriveSubmissionID("watch", []client.SubmissionFile{a, b}, map[string]string{"m": "pics"}),
		"one file":  client.DeriveSubmissionID("cli", []client.SubmissionFile{a}, map[string]string{"m": "pics"}),
		"two files": client.DeriveSubmissionID("cli", []client.SubmissionFile{a, a}, map[string]string{"m": "pics"}),
	} {
		if other, dup := seen[id]; dup {
			t.Errorf("changing the %s gives the same id as %s: %s", name, other, id)
		}
		seen[id] = name
	}

	// Without options: recon watch's ids from before the generator moved
	// here, so a watch daemon's state stays valid.
	h := sha256.New()
	for _, f := range []client.SubmissionFile{a, b} { // sorted by path
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00", f.Path, f.Size, f.ModTime.UnixNano(), f.SHA256)
	}
	if got, want := client.DeriveSubmissionID("watch", []client.SubmissionFile{a, b}, nil), "watch-"+hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("watch id %s, want the one watch derived before: %s", got, want)
	}
}

// TestSubmissionIDFor: recon submit's id of the same files from another
// working directory (relative paths) is the same; touching a file changes
// it.
func TestSubmissionIDFor(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "scan.7")
	if err := os.WriteFile(p, []byte("raw"), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := client.SubmissionIDFor([]string{p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	rel, err := client.SubmissionIDFor([]string{"scan.7"}, nil)
	if err != nil || rel != abs {
		t.Errorf("relative path: %s, %v; want %s", rel, err, abs)
	}
	if err := os.Chtimes(p, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if touched, _ := client.SubmissionIDFor([]string{p}, nil); touched == abs {
		t.Errorf("a touched file keeps the id %s", abs)
	}
	if _, err := client.SubmissionIDFor([]string{filepath.Join(dir, "missing")}, nil); err == nil || client.Resumable(err) {
		t.Errorf("a missing file: %v, want a local, not resumable, error", err)
	}
}
