// Package statelock keeps two recon processes (servers, relays, watch
// daemons) from sharing one state directory: an exclusive flock on a lock
// file, held until the file is closed, and released by the kernel when the
// process dies.
package statelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Wait is how long Acquire waits for a lock held elsewhere: a lock just
// released can still be held for a moment by a child forked meanwhile
// (until its exec closes the descriptor), and a process being restarted
// may still be stopping.
const Wait = 2 * time.Second

// ErrInUse is returned when another process holds the lock.
var ErrInUse = errors.New("in use by another process")

// errBusy is tryLock's error for a lock held elsewhere.
var errBusy = errors.New("lock held")

// Acquire opens (creating) the lock file at path and takes an exclusive
// lock on it. Close the file to release it.
func Acquire(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(Wait)
	for {
		err = tryLock(f)
		if !errors.Is(err, errBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, errBusy) {
			return nil, ErrInUse
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// AcquireDir takes the lock file name in the state directory dir of a
// what ("recon server"), which the setting key names ("RECON_SERVER_STATE_DIR"):
// the errors say which setting to change, and that another what holds it.
func AcquireDir(dir, name, key, what string) (*os.File, error) {
	f, err := Acquire(filepath.Join(dir, name))
	if errors.Is(err, ErrInUse) {
		return nil, fmt.Errorf("%s %s is in use by another %s", key, dir, what)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return f, nil
}
