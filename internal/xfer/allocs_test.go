package xfer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// copyAllocs is the number of allocations of one hashed Copy of n bytes
// to io.Discard, once the buffer pool is warm.
func copyAllocs(n int) float64 {
	data := make([]byte, n)
	src := bytes.NewReader(data)
	h := sha256.New()
	step := func() {
		src.Reset(data)
		h.Reset()
		if _, err := Copy(io.Discard, src, int64(n), h); err != nil {
			panic(err)
		}
	}
	step()
	return testing.AllocsPerRun(20, step)
}

// TestCopyAllocsPerTransfer checks that Copy allocates per transfer (its
// channels and goroutines), not per buffer: 64 buffers' worth costs no more
// allocations than 8 buffers' worth, give or take the pool refilling its
// Buffers chunks after a garbage collection.
func TestCopyAllocsPerTransfer(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	small, large := copyAllocs(Buffers*BufferSize), copyAllocs(64*BufferSize)
	if large > small+Buffers {
		t.Errorf("Copy of 64 buffers allocates %v times, of 8 buffers %v: it allocates per buffer", large, small)
	}
	t.Logf("allocations per Copy: %v (8 buffers), %v (64 buffers)", small, large)
}

// BenchmarkCopy is the pipeline of every transfer without the file or the
// network: 64 MiB from memory, hashed with SHA-256, to io.Discard. allocs/op
// is per transfer of 256 records of BufferSize; allocs/buffer is per
// BufferSize.
func BenchmarkCopy(b *testing.B) {
	const n = 64 << 20
	data := make([]byte, n)
	src := bytes.NewReader(data)
	h := sha256.New()
	b.SetBytes(n)
	b.ReportAllocs()
	var before, after testingMemStats
	before.read()
	for b.Loop() {
		src.Reset(data)
		h.Reset()
		if _, err := Copy(io.Discard, src, n, h); err != nil {
			b.Fatal(err)
		}
	}
	after.read()
	b.ReportMetric(float64(after.mallocs-before.mallocs)/float64(b.N)/(n/BufferSize), "allocs/buffer")
}
