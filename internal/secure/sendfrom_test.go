package secure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// TestSendFrom sends sizes around the record and buffer bounds with
// SendFrom and reads them back; a Write after it still works.
func TestSendFrom(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload - 1, MaxPayload, MaxPayload + 1, writeBufferSize, 1<<20 + 7} {
		send, recv := testCipherStates()
		loop := &loopConn{}
		wire := &countingConn{Conn: loop}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(loop, &Config{Role: RoleClient}, nil, recv)
		msg := randomBytes(n, uint64(n))
		// One byte at a time for the smaller sizes: SendFrom fills each
		// record from a reader that gives little at a time.
		var src io.Reader = bytes.NewReader(append(msg, "not sent"...))
		if n < 2*MaxPayload {
			src = iotest.OneByteReader(src)
		}
		sent, err := w.SendFrom(src, int64(n), nil)
		if err != nil || sent != int64(n) {
			t.Fatalf("SendFrom(%d) = %d, %v", n, sent, err)
		}
		if _, err := w.Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
		if err := w.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := readAll(r)
		if err != io.EOF {
			t.Fatalf("size %d: read: %v", n, err)
		}
		if want := append(msg, "after"...); !bytes.Equal(got, want) {
			t.Fatalf("size %d: got %d bytes, want %d (or different)", n, len(got), len(want))
		}
		if n > 0 && wire.n() > int64(n+len("after"))+int64((n+MaxPayload-1)/MaxPayload+2)*(lengthSize+recordOverhead) {
			t.Errorf("size %d: %d bytes on the wire: records not full", n, wire.n())
		}
	}
}

// TestSendFromShortSource checks that a source ending early is an error
// wrapping io.ErrUnexpectedEOF, that what it gave was sent, and that an
// error of the source is returned as it is, the stream staying usable.
func TestSendFromShortSource(t *testing.T) {
	send, recv := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
	msg := randomBytes(3*MaxPayload+5, 9)
	sent, err := w.SendFrom(bytes.NewReader(msg), int64(len(msg))+10, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || sent != int64(len(msg)) {
		t.Fatalf("SendFrom of a short source = %d, %v; want %d, io.ErrUnexpectedEOF", sent, err, len(msg))
	}
	boom := errors.New("disk on fire")
	sent, err = w.SendFrom(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom)), 100, nil)
	if !errors.Is(err, boom) || sent != 3 {
		t.Fatalf("SendFrom of a failing source = %d, %v; want 3, %v", sent, err, boom)
	}
	if err := w.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite after a source error: %v", err)
	}
	got, err := readAll(r)
	if err != io.EOF || !bytes.Equal(got, append(msg, "abc"...)) {
		t.Fatalf("read back %d bytes, %v; want the %d the sources gave", len(got), err, len(msg)+3)
	}
}

// TestSendFromNoAllocs checks that SendFrom does not allocate once warm.
func TestSendFromNoAllocs(t *testing.T) {
	send, recv := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
	msg := randomBytes(256<<10, 4)
	src := bytes.NewReader(msg)
	buf := make([]byte, len(msg))
	step := func() {
		src.Reset(msg)
		if _, err := w.SendFrom(src, int64(len(msg)), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := testing.AllocsPerRun(50, step); n != 0 && !raceEnabled {
		t.Errorf("SendFrom+Read allocate %v times per 256 KiB", n)
	}
	if !bytes.Equal(buf, msg) {
		t.Error("data corrupted")
	}
}

// TestSendFromFile sends from a file (readv on Linux) sizes around the
// record and batch bounds, then a file shorter than announced.
func TestSendFromFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{1, MaxPayload, MaxPayload + 1, batchRecords * MaxPayload, batchRecords*MaxPayload + 1, 3<<20 + 5} {
		send, recv := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
		msg := randomBytes(n, uint64(n))
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, append(msg, "tail"...), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sent, err := w.SendFrom(f, int64(n), nil)
		if err != nil || sent != int64(n) {
			t.Fatalf("SendFrom(file of %d) = %d, %v", n, sent, err)
		}
		// The file's offset is just past what was sent.
		sent, err = w.SendFrom(f, 10, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) || sent != 4 {
			t.Fatalf("SendFrom past the end of the file = %d, %v; want 4, io.ErrUnexpectedEOF", sent, err)
		}
		f.Close()
		if err := w.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := readAll(r)
		if err != io.EOF || !bytes.Equal(got, append(msg, "tail"...)) {
			t.Fatalf("size %d: read back %d bytes, %v", n, len(got), err)
		}
	}
}

// TestSendFromFileNoAllocs checks that SendFrom from a file does not
// allocate once warm: not at all without a hash or hashing one batch, and
// when it hashes in a goroutine of its own, a few times per call (as many
// for 16 MiB as for 1 MiB), never per record.
func TestSendFromFileNoAllocs(t *testing.T) {
	allocs := func(n int, hashed bool) float64 {
		send, recv := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
		msg := randomBytes(n, 5)
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, msg, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, len(msg))
		var h hash.Hash
		if hashed {
			h = sha256.New()
		}
		step := func() {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if h != nil {
				h.Reset()
			}
			if _, err := w.SendFrom(f, int64(len(msg)), h); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, msg) {
				t.Fatal("data corrupted")
			}
		}
		step()
		return testing.AllocsPerRun(10, step)
	}
	if raceEnabled {
		return // the race detector allocates
	}
	if a := allocs(512<<10, false); a != 0 {
		t.Errorf("SendFrom (file) + Read allocate %v times per 512 KiB", a)
	}
	if a := allocs(batchRecords*MaxPayload, true); a != 0 {
		t.Errorf("SendFrom (file, hashed) + Read allocate %v times per batch", a)
	}
	small, large := allocs(1<<20, true), allocs(16<<20, true)
	if large > small || small > 8 {
		t.Errorf("SendFrom (file, hashed) + Read allocate %v times for 1 MiB, %v for 16 MiB: want a few per call, none per record", small, large)
	}
}

// TestSendFromHash checks that SendFrom feeds the hash exactly the bytes
// it sends, from a file (readv) and from another reader, including when
// the source ends early.
func TestSendFromHash(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{1, MaxPayload + 1, batchRecords*MaxPayload + 1, 3<<20 + 5} {
		msg := randomBytes(n, uint64(n))
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, msg, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range []struct {
			name string
			r    io.Reader
		}{{"file", f}, {"reader", iotest.HalfReader(bytes.NewReader(msg))}} {
			send, recv := testCipherStates()
			wire := &loopConn{}
			w := newConn(wire, &Config{Role: RoleClient}, send, nil)
			r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			// One byte more than the source has: all of it is sent and hashed.
			sent, err := w.SendFrom(src.r, int64(n)+1, h)
			if !errors.Is(err, io.ErrUnexpectedEOF) || sent != int64(n) {
				t.Fatalf("%s %d: SendFrom = %d, %v; want %d, io.ErrUnexpectedEOF", src.name, n, sent, err, n)
			}
			if want := sha256.Sum256(msg); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("%s %d: the hash is not that of the bytes sent", src.name, n)
			}
			w.CloseWrite()
			if got, err := readAll(r); err != io.EOF || !bytes.Equal(got, msg) {
				t.Fatalf("%s %d: read back %d bytes, %v", src.name, n, len(got), err)
			}
		}
		f.Close()
	}
}

// failAfterConn accepts limit bytes, then fails every write.
type failAfterConn struct {
	loopConn
	limit int
}

func (f *failAfterConn) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		f.limit = 0
		return 0, errors.New("peer went away")
	}
	f.limit -= len(p)
	return len(p), nil
}

// TestSendFromHashSendFails checks that a failure to send while SendFrom
// hashes in a goroutine of its own ends SendFrom with that error, which
// sticks, whichever batch it hits.
func TestSendFromHashSendFails(t *testing.T) {
	msg := randomBytes(4<<20, 11)
	for _, limit := range []int{0, writeBufferSize, 5 * writeBufferSize} {
		send, _ := testCipherStates()
		w := newConn(&failAfterConn{limit: limit}, &Config{Role: RoleClient}, send, nil)
		sent, err := w.SendFrom(bytes.NewReader(msg), int64(len(msg)), sha256.New())
		if err == nil || sent >= int64(len(msg)) {
			t.Fatalf("limit %d: SendFrom = %d, %v; want an error", limit, sent, err)
		}
		if _, err2 := w.Write([]byte("x")); err2 == nil {
			t.Fatalf("limit %d: a Write after the failed SendFrom succeeded", limit)
		}
	}
}
