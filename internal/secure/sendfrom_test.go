package secure

import (
	"bytes"
	"errors"
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
		sent, err := w.SendFrom(src, int64(n))
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
	sent, err := w.SendFrom(bytes.NewReader(msg), int64(len(msg))+10)
	if !errors.Is(err, io.ErrUnexpectedEOF) || sent != int64(len(msg)) {
		t.Fatalf("SendFrom of a short source = %d, %v; want %d, io.ErrUnexpectedEOF", sent, err, len(msg))
	}
	boom := errors.New("disk on fire")
	sent, err = w.SendFrom(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom)), 100)
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
		if _, err := w.SendFrom(src, int64(len(msg))); err != nil {
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
		sent, err := w.SendFrom(f, int64(n))
		if err != nil || sent != int64(n) {
			t.Fatalf("SendFrom(file of %d) = %d, %v", n, sent, err)
		}
		// The file's offset is just past what was sent.
		sent, err = w.SendFrom(f, 10)
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
// allocate once warm.
func TestSendFromFileNoAllocs(t *testing.T) {
	send, recv := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
	msg := randomBytes(512<<10, 5)
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
	step := func() {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if _, err := w.SendFrom(f, int64(len(msg))); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := testing.AllocsPerRun(50, step); n != 0 && !raceEnabled {
		t.Errorf("SendFrom (file) + Read allocate %v times per 512 KiB", n)
	}
	if !bytes.Equal(buf, msg) {
		t.Error("data corrupted")
	}
}
