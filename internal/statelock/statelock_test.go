//go:build unix

package statelock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestAcquire(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	f, err := Acquire(p)
	if err != nil {
		t.Fatal(err)
	}
	// A second descriptor (as a second process would have) is refused.
	if _, err := Acquire(p); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Acquire = %v, want ErrInUse", err)
	}
	f.Close()
	g, err := Acquire(p)
	if err != nil {
		t.Fatalf("Acquire after release = %v", err)
	}
	g.Close()
}

// TestAcquireDirSaysWho: a state directory in use is refused with the
// setting that names it and the kind of process holding it.
func TestAcquireDirSaysWho(t *testing.T) {
	dir := t.TempDir()
	f, err := AcquireDir(dir, "lock", "RELAY_STATE_DIR", "recon relay")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = AcquireDir(dir, "lock", "RELAY_STATE_DIR", "recon relay")
	if want := "RELAY_STATE_DIR " + dir + " is in use by another recon relay"; err == nil || err.Error() != want {
		t.Fatalf("second AcquireDir = %v, want %q", err, want)
	}
}
