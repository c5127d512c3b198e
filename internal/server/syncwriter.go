package server

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackChunk is how much is written before the kernel is asked to start
// writing it to disk.
const writebackChunk = 16 << 20

// syncingWriter writes to a file and starts the kernel's write-back of each
// chunk as it completes (sync_file_range), so the disk works while the
// network does and the fsync at the end of an upload has little left to
// wait for. Where the call is not supported it is skipped.
type syncingWriter struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // bytes whose write-back was started
}

func newSyncingWriter(f *os.File) *syncingWriter { return &syncingWriter{f: f} }

func (w *syncingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writebackChunk {
		_ = unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.off-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.off
	}
	return n, err
}
