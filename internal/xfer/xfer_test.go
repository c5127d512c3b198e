package xfer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestCopy(t *testing.T) {
	data := make([]byte, 3*BufferSize*Buffers+12345)
	rand.Read(data)
	for _, n := range []int{0, 1, 1000, BufferSize, BufferSize + 1, 5 * BufferSize, len(data)} {
		for _, hashed := range []bool{false, true} {
			var dst bytes.Buffer
			var h = sha256.New()
			hh := h
			if !hashed {
				hh = nil
			}
			// A reader that returns short reads exercises ReadFull.
			src := iotest.HalfReader(bytes.NewReader(data[:n]))
			w, err := Copy(&dst, src, int64(n), hh)
			if err != nil || w != int64(n) || !bytes.Equal(dst.Bytes(), data[:n]) {
				t.Fatalf("Copy(n=%d, hashed=%v) = %d, %v; bytes equal: %v", n, hashed, w, err, bytes.Equal(dst.Bytes(), data[:n]))
			}
			if hashed {
				want := sha256.Sum256(data[:n])
				if !bytes.Equal(h.Sum(nil), want[:]) {
					t.Fatalf("Copy(n=%d) hash differs", n)
				}
			}
		}
	}
}

func TestCopyShort(t *testing.T) {
	for _, n := range []int{100, 10 * BufferSize} {
		src := bytes.NewReader(make([]byte, n-1))
		_, err := Copy(io.Discard, src, int64(n), sha256.New())
		if !errors.Is(err, ErrShort) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Copy of %d from %d bytes: %v, want ErrShort", n, n-1, err)
		}
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

func TestCopyWriteError(t *testing.T) {
	// A write error stops the copy without reading the whole source.
	src := &countingReader{r: rand.Reader}
	_, err := Copy(&failWriter{after: 2}, src, 1<<30, sha256.New())
	if err == nil || err.Error() != "disk full" {
		t.Fatalf("Copy = %v, want the write error", err)
	}
	if src.n > int64(BufferSize*(Buffers+4)) {
		t.Errorf("read %d bytes after the writer failed", src.n)
	}
	_, err = Copy(io.Discard, iotest.ErrReader(errors.New("boom")), 1<<20, nil)
	if err == nil || err.Error() != "boom" {
		t.Errorf("Copy from a failing reader = %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func BenchmarkCopyHashed(b *testing.B) {
	const n = 64 << 20
	src := bytes.NewReader(make([]byte, n))
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		src.Seek(0, io.SeekStart)
		if _, err := Copy(io.Discard, src, n, sha256.New()); err != nil {
			b.Fatal(err)
		}
	}
}
