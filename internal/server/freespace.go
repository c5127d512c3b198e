package server

import (
	"fmt"
	"syscall"

	"github.com/recon-mri/recon/internal/jobs"
)

// uploadSpace returns the free space an upload may count on, to be
// compared with MIN_FREE_DISK_MB plus its size: the free space of the
// input disk, less what the disks the job will also need are missing.
//
//   - The job store's reserve (jobs.ReserveBytes), while the store has
//     released it after a full disk: that space is the store's to take
//     back, not an upload's.
//   - An output or state disk other than the input disk must keep
//     MIN_FREE_DISK_MB (and the store's missing reserve) free too, or no
//     upload fits: a job admitted then could write no output, or the store
//     not record it. The result is then negative.
//
// Outputs of running jobs are on disk, so in the free space; they grow at
// most to MIN_FREE_DISK_MB, where the job is stopped (see watchOutput).
func (s *Server) uploadSpace() (int64, error) {
	// Taken back first where there is room: then the upload cannot use it.
	if err := s.store.RestoreReserve(); err != nil {
		s.log.Warn("job store reserve not restored", "err", err)
	}
	in, err := diskOf(s.cfg.InputBaseDir)
	if err != nil {
		return 0, err
	}
	avail := in.free
	var short int64 // the most another disk lacks
	for _, d := range []struct {
		dir  string
		need int64 // besides MIN_FREE_DISK_MB
	}{
		{s.cfg.OutputBaseDir, 0},
		{s.cfg.StateDir, s.storeDeficit()},
	} {
		o, err := diskOf(d.dir)
		if err != nil {
			return 0, err
		}
		if o.dev == in.dev {
			avail -= d.need
			continue
		}
		short = max(short, s.cfg.MinFreeDiskBytes+d.need-o.free)
	}
	if short > 0 {
		return -short, nil // no upload fits
	}
	return avail, nil
}

// storeDeficit is the space the job store needs back for its reserve: 0
// while it holds it.
func (s *Server) storeDeficit() int64 {
	if s.store.Reserved() {
		return 0
	}
	return jobs.ReserveBytes
}

type disk struct {
	dev  uint64
	free int64
}

// diskOf returns the device and free space of the file system holding dir.
func diskOf(dir string) (disk, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return disk{}, fmt.Errorf("stat %s: %w", dir, err)
	}
	free, err := freeBytes(dir)
	if err != nil {
		return disk{}, err
	}
	return disk{dev: uint64(st.Dev), free: free}, nil
}
