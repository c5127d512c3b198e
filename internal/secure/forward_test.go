package secure

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/recon-mri/recon/internal/keys"
)

// relayPairs returns the four ends of a relayed transfer over loopback
// TCP, each pair with its own key: send writes to in, the relay forwards
// from in to out, and recv reads what out wrote.
func relayPairs(t *testing.T) (send, in, out, recv *Conn) {
	t.Helper()
	a := testConfig(keys.MustGenerate(), RoleClient)
	b := testConfig(keys.MustGenerate(), RoleClient)
	send, in = tcpPair(t, a, a)
	out, recv = tcpPair(t, b, b)
	return send, in, out, recv
}

// TestForward forwards part of a stream between two real connections: the
// bytes before it are read with Read (leaving part of a record behind),
// Forward moves n bytes, and Read gets the rest. The receiver must get
// exactly the forwarded bytes, and the progress reports must add up.
func TestForward(t *testing.T) {
	const p = MaxPayload
	for _, tc := range []struct {
		before, n, after int
	}{
		{0, 1, 0},
		{0, p - 1, 1},
		{0, p, 0},
		{0, p + 1, p},
		{10, 5*p + 7, 3},
		{p, 2 * p, 0},
		{0, 3<<20 + 5, 17}, // more than the read and write buffers hold
		{p - 1, 1<<20 + 1, p + 1},
	} {
		t.Run(fmt.Sprintf("before=%d,n=%d,after=%d", tc.before, tc.n, tc.after), func(t *testing.T) {
			send, in, out, recv := relayPairs(t)
			data := randomBytes(tc.before+tc.n+tc.after, uint64(tc.n))
			sent := make(chan error, 1)
			go func() {
				_, err := send.Write(data)
				if err == nil {
					err = send.CloseWrite()
				}
				sent <- err
			}()
			received := make(chan []byte, 1)
			go func() {
				got, err := readAll(recv)
				if err != io.EOF {
					t.Errorf("receiver: %v, want a clean end", err)
				}
				received <- got
			}()

			head := make([]byte, tc.before)
			if _, err := io.ReadFull(in, head); err != nil {
				t.Fatal(err)
			}
			var progress int
			rerr, werr := Forward(out, in, int64(tc.n), Forwarding{
				WriteTimeout: testTimeout,
				Progress:     func(k int) { progress += k },
			})
			if rerr != nil || werr != nil {
				t.Fatalf("Forward = %v, %v", rerr, werr)
			}
			if progress != tc.n {
				t.Errorf("progress reports add up to %d, want %d", progress, tc.n)
			}
			if err := out.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := <-received; !bytes.Equal(got, data[tc.before:tc.before+tc.n]) {
				t.Errorf("receiver got %d bytes, not the %d forwarded", len(got), tc.n)
			}
			rest, err := readAll(in)
			if err != io.EOF || !bytes.Equal(rest, data[tc.before+tc.n:]) {
				t.Errorf("after Forward the source read %d bytes (%v), want the %d after", len(rest), err, tc.after)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if in.r.buf != nil || out.w.buf != nil {
				t.Errorf("buffers still held after the transfer: read %v, write %v", in.r.buf != nil, out.w.buf != nil)
			}
		})
	}
}

// scriptedForward forwards n bytes from a source that delivers wire in
// chunks of the given size into an in-memory destination, and returns the
// forwarded data as the destination's peer reads it (with the error that
// ended that reading), Forward's errors and the source.
func scriptedForward(t *testing.T, wire []byte, chunk int, n int64) (got []byte, end, readErr, writeErr error, src *Conn) {
	t.Helper()
	_, recv := testCipherStates()
	src = newConn(&scriptConn{in: wire, chunk: chunk}, &Config{Role: RoleClient}, nil, recv)
	send2, recv2 := testCipherStates()
	dstWire := &loopConn{}
	dst := newConn(dstWire, &Config{Role: RoleClient}, send2, nil)
	readErr, writeErr = Forward(dst, src, n, Forwarding{})
	if err := dst.CloseWrite(); err != nil && writeErr == nil {
		t.Fatal(err)
	}
	got, end, _ = readScript(recv2, dstWire.buf)
	return got, end, readErr, writeErr, src
}

// TestForwardRecords forwards streams whose records and reads fall in
// every way across the bytes forwarded: tiny records, reads of a few
// bytes that split records and length prefixes, and an end inside a record
// whose rest stays readable.
func TestForwardRecords(t *testing.T) {
	send, _ := testCipherStates()
	var recs []rec
	var data []byte
	for i := range 300 {
		p := string(randomBytes(i%7, uint64(i))) // empty records too
		recs = append(recs, rec{recordData, p})
		data = append(data, p...)
	}
	big := randomBytes(MaxPayload, 9)
	recs = append(recs, rec{recordData, string(big)}, rec{recordClose, ""})
	data = append(data, big...)
	wire := bytes.Join(sealAll(t, send, recs...), nil)

	for _, chunk := range []int{1, 3, 1000, 0} {
		for _, n := range []int{1, 100, len(data) - MaxPayload/2, len(data)} {
			got, end, rerr, werr, src := scriptedForward(t, wire, chunk, int64(n))
			if rerr != nil || werr != nil || end != io.EOF || !bytes.Equal(got, data[:n]) {
				t.Errorf("chunk %d, n %d: Forward = %v, %v; forwarded %d bytes, ending %v", chunk, n, rerr, werr, len(got), end)
				continue
			}
			rest, err := readAll(src)
			if err != io.EOF || !bytes.Equal(rest, data[n:]) {
				t.Errorf("chunk %d, n %d: then the source read %d bytes (%v), want %d", chunk, n, len(rest), err, len(data)-n)
			}
		}
	}
}

// TestForwardSourceFails checks that each way a source can fail is a read
// error, after the data that came before it was forwarded.
func TestForwardSourceFails(t *testing.T) {
	send, _ := testCipherStates()
	frames := sealAll(t, send, rec{recordData, "first "}, rec{recordData, "second "}, rec{recordData, "third"}, rec{recordClose, ""})
	flipped := bytes.Clone(frames[2])
	flipped[len(flipped)-1] ^= 1
	badType := appendTestRecord(t, 2, 7, "x")
	for _, tc := range []struct {
		name string
		wire [][]byte
		want error
	}{
		{"altered record", [][]byte{frames[0], frames[1], flipped}, ErrCorrupt},
		{"close record early", [][]byte{frames[0], frames[1], sealAll(t, cipherAt(t, 2), rec{recordClose, ""})[0]}, io.ErrUnexpectedEOF},
		{"end without close record", [][]byte{frames[0], frames[1]}, ErrTruncated},
		{"end inside a record", [][]byte{frames[0], frames[1], frames[2][:5]}, ErrTruncated},
		{"unknown record type", [][]byte{frames[0], frames[1], badType}, ErrRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, end, rerr, werr, _ := scriptedForward(t, bytes.Join(tc.wire, nil), 0, 100)
			if !errors.Is(rerr, tc.want) || werr != nil {
				t.Errorf("Forward = %v, %v; want read error %v", rerr, werr, tc.want)
			}
			if string(got) != "first second " || end != io.EOF {
				t.Errorf("forwarded %q (%v), want what came before the failure", got, end)
			}
		})
	}
}

// cipherAt returns a sending cipher state of the test key that has sealed
// n records.
func cipherAt(t *testing.T, n uint64) *noise.CipherState {
	t.Helper()
	send, _ := testCipherStates()
	send.SetNonce(n)
	return send
}

// appendTestRecord seals a record of any type byte with the test key, as
// the record with nonce n.
func appendTestRecord(t *testing.T, n uint64, typ byte, payload string) []byte {
	t.Helper()
	b, err := appendRecord(nil, cipherAt(t, n), typ, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForwardDestinationFails checks that a destination that goes away or
// stops reading is a write error, and that Forward then returns.
func TestForwardDestinationFails(t *testing.T) {
	const n = 64 << 20 // more than loopback TCP buffers hold
	t.Run("peer closed", func(t *testing.T) {
		send, in, out, recv := relayPairs(t)
		go streamZeros(send, n)
		recv.Close()
		rerr, werr := Forward(out, in, n, Forwarding{WriteTimeout: testTimeout})
		if rerr != nil || werr == nil {
			t.Fatalf("Forward = %v, %v; want a write error", rerr, werr)
		}
		if _, err := out.Write([]byte("x")); err == nil {
			t.Error("a write after the failed Forward succeeded: the error does not stick")
		}
		rerr, werr = Forward(out, in, 1, Forwarding{})
		if rerr != nil || werr == nil {
			t.Errorf("Forward to a failed destination = %v, %v; want its write error", rerr, werr)
		}
	})
	t.Run("destination closed here", func(t *testing.T) {
		send, in, out, _ := relayPairs(t)
		go streamZeros(send, 1<<20)
		out.Close()
		rerr, werr := Forward(out, in, 1<<20, Forwarding{WriteTimeout: testTimeout})
		if rerr != nil || !errors.Is(werr, net.ErrClosed) {
			t.Fatalf("Forward = %v, %v; want net.ErrClosed", rerr, werr)
		}
	})
	t.Run("peer stops reading", func(t *testing.T) {
		send, in, out, _ := relayPairs(t)
		go streamZeros(send, n)
		rerr, werr := Forward(out, in, n, Forwarding{WriteTimeout: 100 * time.Millisecond})
		if ne, ok := errors.AsType[net.Error](werr); rerr != nil || !ok || !ne.Timeout() || !errors.Is(werr, os.ErrDeadlineExceeded) {
			t.Fatalf("Forward = %v, %v; want a write timeout", rerr, werr)
		}
	})
}

// TestForwardSealFails checks that a destination whose nonces are used up
// is a write error that sticks, as it is for Write.
func TestForwardSealFails(t *testing.T) {
	send, _ := testCipherStates()
	wire := bytes.Join(sealAll(t, send, rec{recordData, "some data"}, rec{recordClose, ""}), nil)
	_, recv := testCipherStates()
	src := newConn(&scriptConn{in: wire}, &Config{Role: RoleClient}, nil, recv)
	exhausted, _ := testCipherStates()
	exhausted.SetNonce(noise.MaxNonce + 1)
	dst := newConn(&loopConn{}, &Config{Role: RoleClient}, exhausted, nil)
	rerr, werr := Forward(dst, src, 4, Forwarding{})
	if rerr != nil || werr == nil {
		t.Fatalf("Forward = %v, %v; want a write error", rerr, werr)
	}
	if _, err := dst.Write([]byte("x")); err == nil {
		t.Error("the seal failure does not stick")
	}
}

// streamZeros writes n zero bytes to c and ends its stream; errors (the
// test's other end going away) end it early.
func streamZeros(c *Conn, n int) {
	buf := make([]byte, 256<<10)
	for n > 0 {
		k, err := c.Write(buf[:min(len(buf), n)])
		if err != nil {
			return
		}
		n -= k
	}
	_ = c.CloseWrite()
}

func TestForwardNoAllocs(t *testing.T) {
	send, recv := testCipherStates()
	srcWire := &loopConn{}
	w := newConn(srcWire, &Config{Role: RoleClient}, send, nil)
	src := newConn(srcWire, &Config{Role: RoleClient}, nil, recv)
	send2, recv2 := testCipherStates()
	dstWire := &loopConn{}
	dst := newConn(dstWire, &Config{Role: RoleClient}, send2, nil)
	sink := newConn(dstWire, &Config{Role: RoleClient}, nil, recv2)
	msg := randomBytes(200<<10, 5)
	buf := make([]byte, len(msg))
	progress := 0
	f := Forwarding{Progress: func(n int) { progress += n }}
	step := func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if rerr, werr := Forward(dst, src, int64(len(msg)), f); rerr != nil || werr != nil {
			t.Fatal(rerr, werr)
		}
		if _, err := io.ReadFull(sink, buf); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := testing.AllocsPerRun(20, step); n != 0 && !raceEnabled {
		t.Errorf("Forward allocates %v times per 200 KiB", n)
	}
	if !bytes.Equal(buf, msg) || progress != 22*len(msg) {
		t.Errorf("data corrupted or progress wrong (%d)", progress)
	}
}

// FuzzForward forwards arbitrary bytes, taken as the record stream of a
// source with a known key, in source reads of a few sizes. Forward must
// deliver exactly what Read would have returned from the same stream, up
// to n bytes, and fail only as a reader fails.
func FuzzForward(f *testing.F) {
	frames, all := fuzzFrames(f)
	f.Add(all, uint16(len(fuzzStream(6))))
	f.Add(all, uint16(100))
	f.Add(all, uint16(5000))
	f.Add(bytes.Join(frames[:3], nil), uint16(300))
	f.Add(append(bytes.Clone(frames[0]), frames[2]...), uint16(50))
	f.Add([]byte{0xff, 0xff}, uint16(1))
	f.Add(all, uint16(0))

	f.Fuzz(func(t *testing.T, wire []byte, n16 uint16) {
		n := int(n16)
		_, recv := testCipherStates()
		read, _ := readAll(newConn(&scriptConn{in: wire}, &Config{Role: RoleClient}, nil, recv))
		want := read[:min(n, len(read))]
		for _, chunk := range []int{0, 1, 7} {
			got, end, rerr, werr, _ := scriptedForward(t, wire, chunk, int64(n))
			if werr != nil || end != io.EOF {
				t.Fatalf("chunk %d: write error %v, destination ended with %v", chunk, werr, end)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("chunk %d: forwarded %d bytes, Read returns %d of the %d asked", chunk, len(got), len(want), n)
			}
			switch {
			case len(got) == n && rerr != nil:
				t.Fatalf("chunk %d: all %d bytes forwarded, yet read error %v", chunk, n, rerr)
			case len(got) < n && !errors.Is(rerr, io.ErrUnexpectedEOF) && !errors.Is(rerr, ErrTruncated) &&
				!errors.Is(rerr, ErrCorrupt) && !errors.Is(rerr, ErrRecord):
				t.Fatalf("chunk %d: %d of %d bytes forwarded, read error %v", chunk, len(got), n, rerr)
			}
		}
	})
}
