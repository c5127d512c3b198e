package secure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
)

// trickleConn delivers what it holds a few bytes at a time, as a slow
// network does.
type trickleConn struct {
	loopConn
	step int
}

func (t *trickleConn) Read(p []byte) (int, error) {
	return t.loopConn.Read(p[:min(len(p), t.step)])
}

// TestReceiveTo receives sizes around the record, batch and pipeline
// bounds with ReceiveTo, from records of several sizes, read from the
// transport all at once or a few bytes at a time, and checks the bytes,
// their hash, the progress reported and that what follows them on the
// stream is still read by Read.
func TestReceiveTo(t *testing.T) {
	sizes := []int{1, MaxPayload - 1, MaxPayload, MaxPayload + 1, receiveSerial, receiveSerial + 1, readBufferSize + 3, 3<<20 + 5}
	for _, n := range sizes {
		for _, wr := range []struct {
			name  string
			write int  // bytes per Write of the sender: record sizes
			step  int  // bytes per transport read, 0 for all
			split bool // the last record carries the data's end and what follows
		}{
			{"full", 256 << 10, 0, false},
			{"small-records", 1000, 0, false},
			{"trickle", 256 << 10, 7777, false},
			{"shared-record", 256 << 10, 0, true},
		} {
			if wr.step > 0 && n > 1<<20 {
				continue
			}
			send, recv := testCipherStates()
			var conn net.Conn = &loopConn{}
			if wr.step > 0 {
				conn = &trickleConn{step: wr.step}
			}
			w := newConn(conn, &Config{Role: RoleClient}, send, nil)
			rconn := newConn(conn, &Config{Role: RoleClient}, nil, recv)
			msg := randomBytes(n, uint64(n))
			after := []byte("what follows")
			if wr.split {
				if _, err := w.Write(append(append([]byte{}, msg...), after...)); err != nil {
					t.Fatal(err)
				}
			} else {
				for p := msg; len(p) > 0; {
					k := min(len(p), wr.write)
					if _, err := w.Write(p[:k]); err != nil {
						t.Fatal(err)
					}
					p = p[k:]
				}
				if _, err := w.Write(after); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			h := sha256.New()
			reported := 0
			m, err := rconn.ReceiveTo(&got, int64(n), h, func(k int) { reported += k })
			if err != nil || m != int64(n) {
				t.Fatalf("%d/%s: ReceiveTo = %d, %v", n, wr.name, m, err)
			}
			if !bytes.Equal(got.Bytes(), msg) {
				t.Fatalf("%d/%s: received %d bytes, different from the %d sent", n, wr.name, got.Len(), n)
			}
			if sum := sha256.Sum256(msg); !bytes.Equal(h.Sum(nil), sum[:]) {
				t.Fatalf("%d/%s: wrong hash", n, wr.name)
			}
			if reported != n {
				t.Fatalf("%d/%s: progress reported %d bytes", n, wr.name, reported)
			}
			rest, err := readAll(rconn)
			if err != io.EOF || !bytes.Equal(rest, after) {
				t.Fatalf("%d/%s: then read %q, %v; want %q, io.EOF", n, wr.name, rest, err, after)
			}
		}
	}
}

// TestReceiveToShortStream checks that a stream closing before n bytes is
// an error wrapping io.ErrUnexpectedEOF, after what arrived was written
// and hashed, and that a truncated stream is ErrTruncated.
func TestReceiveToShortStream(t *testing.T) {
	for _, n := range []int{1000, 1 << 20} {
		send, recv := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
		msg := randomBytes(n, 3)
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if err := w.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		h := sha256.New()
		m, err := r.ReceiveTo(&got, int64(n)+1, h, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) || m != int64(n) || !bytes.Equal(got.Bytes(), msg) {
			t.Fatalf("%d: ReceiveTo of a short stream = %d, %v (%d bytes kept); want %d, io.ErrUnexpectedEOF", n, m, err, got.Len(), n)
		}
		if sum := sha256.Sum256(msg); !bytes.Equal(h.Sum(nil), sum[:]) {
			t.Fatalf("%d: the bytes that arrived were not all hashed", n)
		}

		// The same records without the close record: truncated.
		send, recv = testCipherStates()
		wire = &loopConn{}
		w = newConn(wire, &Config{Role: RoleClient}, send, nil)
		r = newConn(wire, &Config{Role: RoleClient}, nil, recv)
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		got.Reset()
		m, err = r.ReceiveTo(&got, int64(n)+1, nil, nil)
		if !errors.Is(err, ErrTruncated) || m != int64(n) {
			t.Fatalf("%d: ReceiveTo of a truncated stream = %d, %v; want %d, ErrTruncated", n, m, err, n)
		}
	}
}

// TestReceiveToCorrupt checks that a record altered in transit fails
// ReceiveTo with ErrCorrupt, and its bytes are not written.
func TestReceiveToCorrupt(t *testing.T) {
	send, recv := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
	msg := randomBytes(2<<20, 6)
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	bad := 40*maxFrameSize + 100 // inside the 41st record
	wire.buf[bad] ^= 1
	var got bytes.Buffer
	m, err := r.ReceiveTo(&got, int64(len(msg)), nil, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReceiveTo of an altered record: %v; want ErrCorrupt", err)
	}
	if m != 40*MaxPayload || !bytes.Equal(got.Bytes(), msg[:m]) {
		t.Fatalf("wrote %d bytes before the altered record; want the %d before it", m, 40*MaxPayload)
	}
}

// TestReceiveToWriteError checks that an error of w stops ReceiveTo and
// is returned as it is.
func TestReceiveToWriteError(t *testing.T) {
	for _, n := range []int{1000, 4 << 20} {
		send, recv := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
		if _, err := w.Write(randomBytes(n, 2)); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("disk on fire")
		dst := &failingWriter{after: n / 2, err: boom}
		if _, err := r.ReceiveTo(dst, int64(n), sha256.New(), nil); !errors.Is(err, boom) {
			t.Fatalf("%d: ReceiveTo into a failing writer: %v; want %v", n, err, boom)
		}
	}
}

// failingWriter takes after bytes, then fails.
type failingWriter struct {
	after int
	err   error
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.after {
		n := f.after
		f.after = 0
		return n, f.err
	}
	f.after -= len(p)
	return len(p), nil
}

// TestReceiveToNoAllocs checks that ReceiveTo does not allocate per
// record: none at all for a transfer small enough to run in the calling
// goroutine, and as many for 16 MiB as for 1 MiB when it pipelines.
func TestReceiveToNoAllocs(t *testing.T) {
	allocs := func(n int) float64 {
		send, recv := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
		msg := randomBytes(n, 4)
		src := bytes.NewReader(msg)
		h := sha256.New()
		step := func() {
			src.Reset(msg)
			if _, err := w.SendFrom(src, int64(n), nil); err != nil {
				t.Fatal(err)
			}
			h.Reset()
			if _, err := r.ReceiveTo(io.Discard, int64(n), h, nil); err != nil {
				t.Fatal(err)
			}
		}
		step()
		return testing.AllocsPerRun(20, step)
	}
	if raceEnabled {
		return // the race detector allocates
	}
	if a := allocs(receiveSerial); a != 0 {
		t.Errorf("SendFrom+ReceiveTo of %d bytes allocate %v times", receiveSerial, a)
	}
	small, large := allocs(1<<20), allocs(16<<20)
	if large > small || small > 16 {
		t.Errorf("ReceiveTo allocates %v times for 1 MiB, %v for 16 MiB: want a few per call, none per record", small, large)
	}
}
