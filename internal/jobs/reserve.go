package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// ReserveBytes is the size of the reserve file the store keeps beside its
// database (the database path + ReserveSuffix). When a write fails because
// the disk is full (SQLITE_FULL), the store deletes the file and tries the
// write again in the space it leaves, so that the store can still record a
// job's end when job outputs or anything else have used up the disk.
//
// 8 MiB is twice the write-ahead log SQLite keeps before it checkpoints
// (1000 pages of 4 KiB): a log that has reached that size is reused from
// its start after each checkpoint, so once the log has room, the store
// needs new space only for new jobs, which are not admitted on a full disk.
const ReserveBytes = 8 << 20

// ReserveSuffix is added to the database path to name the reserve file.
const ReserveSuffix = ".reserve"

// reserveRetry is the least time between two attempts to create the
// reserve file after one failed.
const reserveRetry = 5 * time.Second

// reserve is the store's reserve file: space held back for the store's
// own writes. It is safe for concurrent use.
type reserve struct {
	path string
	size int64

	mu   sync.Mutex
	held bool      // the file exists at full size
	next time.Time // no restore attempt before this time
}

// openReserve finds the reserve file at path, if it is there at full
// size, and removes what a crash in the middle of restore left. It creates
// nothing: restore does.
func openReserve(path string, size int64) *reserve {
	os.Remove(path + ".tmp")
	r := &reserve{path: path, size: size}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() >= size {
		r.held = true
	}
	return r
}

// release deletes the reserve file (also a partial one), handing its space
// to the store's next write.
func (r *reserve) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	os.Remove(r.path) // a missing file is released already
	r.held = false
}

// releaseIfTight releases the reserve when its file system has less than
// the reserve's size free: then SQLite may not find room for its log,
// shared-memory index and first commits when the store opens.
func (r *reserve) releaseIfTight() {
	if free, err := freeBytes(filepath.Dir(r.path)); err == nil && free < r.size {
		r.release()
	}
}

// restore creates the reserve file again when it is missing and its file
// system has room for it twice over; after a failed attempt, not again for
// reserveRetry. The file is fully allocated and synced, then renamed into
// place.
func (r *reserve) restore() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.held || now.Before(r.next) {
		return nil
	}
	dir := filepath.Dir(r.path)
	free, err := freeBytes(dir)
	if err != nil {
		return fmt.Errorf("restore store reserve: %w", err)
	}
	if free < 2*r.size {
		return nil
	}
	tmp := r.path + ".tmp"
	if err := writeReserve(tmp, r.size); err != nil {
		os.Remove(tmp)
		r.next = now.Add(reserveRetry)
		return fmt.Errorf("restore store reserve: %w", err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore store reserve: %w", err)
	}
	if err := sqlitedb.SyncDir(dir); err != nil {
		return fmt.Errorf("restore store reserve: %w", err)
	}
	r.held = true
	return nil
}

// RestoreReserve creates the store's reserve file again if the store had
// released it and its disk now has room for it twice over. The store also
// does so after each write; a server calls it before it admits an upload,
// so that the upload does not take the reserve's space.
func (s *Store) RestoreReserve() error { return s.reserve.restore() }

// Reserved reports whether the store holds its reserve file now.
func (s *Store) Reserved() bool {
	s.reserve.mu.Lock()
	defer s.reserve.mu.Unlock()
	return s.reserve.held
}

// writeReserve creates the file path of size bytes, allocated on disk (not
// sparse: a sparse file would hold back no space), mode 0600, synced.
func writeReserve(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, size)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeZeros writes size zero bytes to f.
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 64<<10)
	for n := int64(0); n < size; {
		w, err := f.Write(buf[:min(int64(len(buf)), size-n)])
		if err != nil {
			return err
		}
		n += int64(w)
	}
	return nil
}

// SQLite result codes that diskFull recognises.
const (
	sqliteFull         = 13   // SQLITE_FULL
	sqliteIOErrSHMSize = 4874 // SQLITE_IOERR_SHMSIZE: growing the -shm file failed
)

// diskFull reports whether err says the disk is full: SQLite's SQLITE_FULL
// (with any extended code), SQLITE_IOERR_SHMSIZE (how a full disk shows
// when the shared-memory index of the log must grow), or ENOSPC.
func diskFull(err error) bool {
	var coded interface{ Code() int }
	if errors.As(err, &coded) {
		c := coded.Code()
		return c&0xff == sqliteFull || c == sqliteIOErrSHMSize
	}
	return errors.Is(err, syscall.ENOSPC)
}
