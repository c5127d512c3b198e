package xfer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"testing"
)

// BenchmarkSHA256 is the hashing both ends of every transfer do: SHA-256
// over BufferSize blocks, on one core.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, BufferSize)
	h := sha256.New()
	b.SetBytes(BufferSize)
	b.ReportAllocs()
	for b.Loop() {
		h.Write(buf)
	}
}

// BenchmarkReceiveFile is the receiving end of an upload or download
// without the network: 64 MiB copied from memory into a new file through a
// SyncingWriter, hashed on the way, then fdatasynced. The file goes to
// $RECON_BENCH_DIR (e.g. /dev/shm) or a temporary directory.
func BenchmarkReceiveFile(b *testing.B) {
	const n = 64 << 20
	dir := os.Getenv("RECON_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	src := bytes.NewReader(data)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		src.Seek(0, io.SeekStart)
		f, err := os.CreateTemp(dir, "receive-")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Copy(NewSyncingWriter(f), src, n, sha256.New()); err != nil {
			b.Fatal(err)
		}
		if err := Sync(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		b.StopTimer()
		os.Remove(f.Name())
		b.StartTimer()
	}
}
