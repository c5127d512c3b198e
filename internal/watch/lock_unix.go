//go:build unix

package watch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockWait is how long lockFile waits for a lock held elsewhere.
const lockWait = time.Second

// lockFile opens path and takes an exclusive lock on it, held until the
// file is closed, so that two daemons never share one state.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	// A lock just released can still be held for a moment by a child
	// process forked meanwhile (until its exec closes the descriptor), and
	// a daemon being restarted may still be stopping: wait a little.
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another recon watch", filepath.Dir(path))
		}
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return f, nil
}

// openNoBlock opens a file for reading without blocking, should it have
// been replaced by a FIFO since it was looked at.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
