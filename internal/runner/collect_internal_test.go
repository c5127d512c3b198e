package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCollectFileSwapped stands in for a race the walk cannot provoke on
// demand: the entry Lstat saw is replaced (by another file, or a symbolic
// link to one) or grows before it is opened and read.
func TestCollectFileSwapped(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	c := &collector{root: root, lim: Limits{MaxFiles: 10, MaxBytes: 1000}}

	fiB, err := root.Lstat("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.file("a", fiB); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("file a checked against b's Lstat: %v, want a 'replaced' error", err)
	}

	if err := os.Remove(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if err := c.file("b", fiB); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("symbolic link swapped in: %v, want a 'replaced' error", err)
	}

	fiA, err := root.Lstat("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("0123456789 and more"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.file("a", fiA); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("file grew: %v, want a 'changed' error", err)
	}
	if len(c.files) != 0 {
		t.Errorf("collected %v", c.files)
	}
}
