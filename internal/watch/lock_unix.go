//go:build unix

package watch

import (
	"os"
	"path/filepath"
	"syscall"

	"github.com/recon-mri/recon/internal/statelock"
)

// lockFile opens path and takes an exclusive lock on it, held until the
// file is closed, so that two daemons never share one state.
func lockFile(path string) (*os.File, error) {
	return statelock.AcquireDir(filepath.Dir(path), filepath.Base(path), "state directory", "recon watch")
}

// openNoBlock opens a file for reading without blocking, should it have
// been replaced by a FIFO since it was looked at.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
