package secure

import (
	"bytes"
	"errors"
	"io"
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
