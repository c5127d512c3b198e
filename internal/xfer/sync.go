package xfer

import "os"

// WritebackChunk is how much is written before the kernel is asked to start
// writing it to disk.
const WritebackChunk = 16 << 20

// SyncingWriter writes to a file and starts the kernel's write-back of each
// chunk as it completes (sync_file_range on Linux), so the disk works while
// the network does and the fsync at the end of an upload has little left to
// wait for. Where the call is not supported it is skipped.
type SyncingWriter struct {
	f       *os.File
	off     int64 // bytes written
	flushed int64 // bytes whose write-back was started
}

// NewSyncingWriter returns a SyncingWriter that appends to f.
func NewSyncingWriter(f *os.File) *SyncingWriter { return &SyncingWriter{f: f} }

func (w *SyncingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= WritebackChunk {
		startWriteback(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return n, err
}
