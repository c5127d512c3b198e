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
