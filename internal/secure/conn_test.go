package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/recon-mri/recon/internal/keys"
)

func TestRoundTripSizes(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	sizes := []int{0, 1, 2, MaxPayload - 1, MaxPayload, MaxPayload + 1, 2 * MaxPayload, 2*MaxPayload + 1,
		writeBufferSize, 3*MaxPayload + 7, 1 << 20}
	for i, n := range sizes {
		msg := randomBytes(n, uint64(i))
		t.Run(fmt.Sprintf("%d/client-to-server", n), func(t *testing.T) { roundTripThenMore(t, c, s, msg) })
		t.Run(fmt.Sprintf("%d/server-to-client", n), func(t *testing.T) { roundTripThenMore(t, s, c, msg) })
	}
	// A zero-length Write just before CloseWrite: the reader sees the
	// authenticated end of stream, io.EOF, and no data.
	t.Run("0/then-close", func(t *testing.T) {
		c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
		for _, p := range []struct {
			name     string
			from, to *Conn
		}{{"client-to-server", c, s}, {"server-to-client", s, c}} {
			if n, err := p.from.Write(nil); n != 0 || err != nil {
				t.Fatalf("%s: Write(nil) = %d, %v; want 0, nil", p.name, n, err)
			}
			if err := p.from.CloseWrite(); err != nil {
				t.Fatalf("%s: CloseWrite: %v", p.name, err)
			}
			for range 2 { // the end of stream sticks
				if n, err := p.to.Read(make([]byte, 16)); n != 0 || err != io.EOF {
					t.Fatalf("%s: Read after a zero-length Write and CloseWrite = %d, %v; want 0, io.EOF", p.name, n, err)
				}
			}
		}
	})
}

// roundTripThenMore writes msg, then a few more bytes in a second Write,
// and checks that the reader gets both intact and in order, each Read
// returning data: no empty Read and no end of stream in between. So a
// zero-length msg must send nothing the reader can see.
func roundTripThenMore(t *testing.T, from, to *Conn, msg []byte) {
	t.Helper()
	more := []byte("and then more")
	if n, err := from.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write(%d bytes) = %d, %v", len(msg), n, err)
	}
	if n, err := from.Write(more); n != len(more) || err != nil {
		t.Fatalf("Write(%d bytes) after Write(%d bytes) = %d, %v", len(more), len(msg), n, err)
	}
	want := append(msg[:len(msg):len(msg)], more...)
	got := make([]byte, 0, len(want))
	buf := make([]byte, 4096)
	for len(got) < len(want) {
		n, err := to.Read(buf[:min(len(buf), len(want)-len(got))])
		if n == 0 {
			t.Fatalf("Read after %d of %d bytes = 0, %v; want data", len(got), len(want), err)
		}
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("Read after %d of %d bytes: %v", len(got), len(want), err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes that differ from the %d written", len(got), len(want))
	}
}

// TestRecordSplit checks how writes become records on the wire.
func TestRecordSplit(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []int // payload sizes of the records
	}{
		{0, nil},
		{1, []int{1}},
		{MaxPayload, []int{MaxPayload}},
		{MaxPayload + 1, []int{MaxPayload, 1}},
		{3*MaxPayload + 5, []int{MaxPayload, MaxPayload, MaxPayload, 5}},
	} {
		send, _ := testCipherStates()
		wire := &loopConn{}
		w := newConn(wire, &Config{Role: RoleClient}, send, nil)
		n, err := w.Write(make([]byte, tc.n))
		if n != tc.n || err != nil {
			t.Fatalf("Write(%d) = %d, %v", tc.n, n, err)
		}
		var got []int
		b := wire.buf
		for len(b) > 0 {
			l := int(binary.BigEndian.Uint16(b))
			if l > MaxRecordSize {
				t.Fatalf("record length %d > MaxRecordSize", l)
			}
			got = append(got, l-recordOverhead)
			b = b[lengthSize+l:]
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Write(%d) sent records of %v, want %v", tc.n, got, tc.want)
		}
	}
}

// TestStreamBothWays streams several MiB each way at once, written and read
// in random-sized pieces.
func TestStreamBothWays(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	size := 6 << 20
	if testing.Short() {
		size = 1 << 20
	}
	up, down := randomBytes(size, 1), randomBytes(size+12345, 2)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c *Conn, data []byte, seed uint64) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 0))
		for len(data) > 0 {
			n := min(len(data), rng.IntN(3*MaxPayload)+1)
			if _, err := c.Write(data[:n]); err != nil {
				errs <- err
				return
			}
			data = data[n:]
		}
		if err := c.CloseWrite(); err != nil {
			errs <- err
		}
	}
	recv := func(c *Conn, want []byte, seed uint64) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		var got []byte
		buf := make([]byte, 3*MaxPayload)
		for {
			n, err := c.Read(buf[:rng.IntN(len(buf))+1])
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				errs <- err
				return
			}
		}
		if !bytes.Equal(got, want) {
			errs <- fmt.Errorf("received %d bytes, want %d (equal prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
		}
	}
	wg.Add(4)
	go send(c, up, 1)
	go send(s, down, 2)
	go recv(s, up, 3)
	go recv(c, down, 4)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseWrite(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Errorf("second CloseWrite: %v", err)
	}
	if _, err := c.Write([]byte("more")); !errors.Is(err, ErrWriteClosed) {
		t.Errorf("Write after CloseWrite: %v, want ErrWriteClosed", err)
	}
	got, err := readAll(s)
	if err != io.EOF || string(got) != "request" {
		t.Fatalf("server read %q, %v; want \"request\", io.EOF", got, err)
	}
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read after EOF = %d, %v", n, err)
	}
	// The half-closed client still reads the answer.
	if _, err := s.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err = readAll(c)
	if err != io.EOF || string(got) != "answer" {
		t.Fatalf("client read %q, %v; want \"answer\", io.EOF", got, err)
	}
}

func TestCloseWithoutCloseRecordIsTruncation(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	if _, err := c.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	got, err := readAll(s)
	if !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want ErrTruncated", err)
	}
	if string(got) != "partial" {
		t.Errorf("got %q", got)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		done <- err
	}()
	_ = s.Close()
	if err := <-done; err == nil || err == io.EOF {
		t.Errorf("Read after Close = %v, want an error", err)
	}
	_ = c
}

func TestIdleTimeout(t *testing.T) {
	k := keys.MustGenerate()
	scfg := testConfig(k, RoleClient)
	scfg.IdleTimeout = 100 * time.Millisecond
	c, s := tcpPair(t, testConfig(k, RoleClient), scfg)
	_ = s.SetReadDeadline(time.Time{}) // only the idle timeout

	start := time.Now()
	_, err := s.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want a timeout", err)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("error %v is not a net.Error with Timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("idle timeout fired after %v", d)
	}
	// Not sticky: data that comes in time is read.
	for i := range 3 {
		roundTrip(t, c, s, []byte(fmt.Sprint("after idle ", i)))
	}

	// A caller's deadline earlier than the idle timeout wins.
	s.idle = 10 * time.Second
	_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = s.Read(make([]byte, 10))
	if _, idle := err.(*idleTimeoutError); !errors.Is(err, os.ErrDeadlineExceeded) || idle {
		t.Errorf("Read with own deadline = %v, want a plain timeout", err)
	}
}

func TestIdleTimeoutResetsWithData(t *testing.T) {
	// Data arriving within the idle timeout keeps a long read going. The
	// writer is paced by the reader, not by sleeps.
	k := keys.MustGenerate()
	scfg := testConfig(k, RoleClient)
	scfg.IdleTimeout = 2 * time.Second
	c, s := tcpPair(t, testConfig(k, RoleClient), scfg)
	for i := range 20 {
		roundTrip(t, c, s, []byte{byte(i)})
	}
}

// testCipherStates returns a matching pair of cipher states under a fixed
// key, as after a handshake.
func testCipherStates() (send, recv *noise.CipherState) { return cipherStates(suiteAESGCM) }

func cipherStates(suite noiseSuite) (send, recv *noise.CipherState) {
	var k [32]byte
	copy(k[:], "recon test key, not a secret!!!!")
	return noise.UnsafeNewCipherState(suite, k, 0), noise.UnsafeNewCipherState(suite, k, 0)
}

type rec struct {
	typ     byte
	payload string
}

// sealAll seals records with cs, in order, and returns each one's frame.
func sealAll(t testing.TB, cs *noise.CipherState, recs ...rec) [][]byte {
	t.Helper()
	out := make([][]byte, len(recs))
	for i, r := range recs {
		b, err := appendRecord(nil, cs, r.typ, []byte(r.payload))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// readScript reads everything a Conn with the recv state yields from the
// given wire bytes.
func readScript(recv *noise.CipherState, wire []byte) (got []byte, err error, sc *scriptConn) {
	sc = &scriptConn{in: wire, block: true}
	r := newConn(sc, &Config{Role: RoleClient}, nil, recv)
	got, err = readAll(r)
	return got, err, sc
}

func TestRecordSequence(t *testing.T) {
	send, _ := testCipherStates()
	f := sealAll(t, send,
		rec{recordData, "zero "}, rec{recordData, "one "}, rec{recordData, "two "}, rec{recordClose, ""})
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	for _, tc := range []struct {
		name string
		wire []byte
		want string
		err  error
	}{
		{"in order", cat(f[0], f[1], f[2], f[3]), "zero one two ", io.EOF},
		{"reordered", cat(f[0], f[2], f[1], f[3]), "zero ", ErrCorrupt},
		{"duplicated", cat(f[0], f[0], f[1], f[2], f[3]), "zero ", ErrCorrupt},
		{"dropped", cat(f[0], f[2], f[3]), "zero ", ErrCorrupt},
		{"dropped first", cat(f[1], f[2], f[3]), "", ErrCorrupt},
		{"close dropped", cat(f[0], f[1], f[2]), "zero one two ", ErrTruncated},
		{"close early", cat(f[0], f[3]), "zero ", ErrCorrupt},
		{"empty", nil, "", ErrTruncated},
		{"cut in length", cat(f[0], f[1][:1]), "zero ", ErrTruncated},
		{"cut in record", cat(f[0], f[1][:10]), "zero ", ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, recv := testCipherStates()
			sc := &scriptConn{in: tc.wire}
			r := newConn(sc, &Config{Role: RoleClient}, nil, recv)
			got, err := readAll(r)
			if string(got) != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("read %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
			// Failures stick.
			if _, err2 := r.Read(make([]byte, 1)); err2 != err {
				t.Errorf("second Read = %v, want %v again", err2, err)
			}
		})
	}
}

func TestRecordTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    rec
		err  error
	}{
		{"hello after handshake", rec{recordHello, ""}, ErrRecord},
		{"unknown type 0", rec{0, "x"}, ErrRecord},
		{"unknown type 4", rec{4, ""}, ErrRecord},
		{"unknown type 255", rec{255, "x"}, ErrRecord},
		{"close with payload", rec{recordClose, "x"}, ErrRecord},
		{"empty data", rec{recordData, ""}, ErrTruncated}, // skipped, then the stream ends
	} {
		t.Run(tc.name, func(t *testing.T) {
			send, recv := testCipherStates()
			f := sealAll(t, send, rec{recordData, "ok"}, tc.r)
			got, err := readAll(newConn(&scriptConn{in: bytes.Join(f, nil)}, &Config{Role: RoleClient}, nil, recv))
			if string(got) != "ok" || !errors.Is(err, tc.err) {
				t.Errorf("read %q, %v; want \"ok\", %v", got, err, tc.err)
			}
		})
	}
}

// TestRecordLength checks that a length out of range is rejected as soon as
// the 2-byte prefix is read: nothing more is read (or allocated for it).
func TestRecordLength(t *testing.T) {
	for _, n := range []int{0, 1, minRecordSize - 1, MaxRecordSize + 1, 0xffff} {
		_, recv := testCipherStates()
		got, err, sc := readScript(recv, binary.BigEndian.AppendUint16(nil, uint16(n)))
		if len(got) != 0 || !errors.Is(err, ErrRecord) {
			t.Errorf("length %d: read %q, %v; want ErrRecord", n, got, err)
		}
		if sc.readPastEnd {
			t.Errorf("length %d: the reader asked for more bytes", n)
		}
	}
	// The bounds themselves are accepted.
	for _, n := range []int{0, MaxPayload} {
		send, recv := testCipherStates()
		f := sealAll(t, send, rec{recordData, string(make([]byte, n))}, rec{recordClose, ""})
		if got, err, _ := readScript(recv, bytes.Join(f, nil)); len(got) != n || err != io.EOF {
			t.Errorf("payload %d: read %d bytes, %v", n, len(got), err)
		}
	}
}

func TestReflectedRecords(t *testing.T) {
	// Records a side sent, fed back to that side, fail: each direction has
	// its own key.
	k := keys.MustGenerate()
	a, b := memPipe()
	var fromServer bytes.Buffer
	b.record = &fromServer
	ctx := testContext(t)
	ch := make(chan *Conn, 1)
	go func() {
		s, err := Server(ctx, b, testConfig(k, RoleClient))
		if err != nil {
			t.Error(err)
		}
		ch <- s
	}()
	c, err := Client(ctx, a, testConfig(k, RoleClient))
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.FailNow()
	}
	defer c.Close()
	defer s.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	go func() { _, _ = s.Write([]byte("reflect me")) }()
	roundTripRead(t, c, "reflect me")
	reflected := fromServer.Bytes()[lengthSize+handshakeMessageSize:]

	// Feed the server's own record to a reader in the server's receive state.
	got, err, _ := readScript(s.r.cs, reflected)
	if len(got) != 0 || !errors.Is(err, ErrCorrupt) {
		t.Errorf("reflected record: read %q, %v; want ErrCorrupt", got, err)
	}
}

func roundTripRead(t *testing.T, c *Conn, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestFailureClosesConn(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	// Forge a record the server cannot decrypt, on the raw connection.
	raw := c.conn
	if _, err := raw.Write([]byte{0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read = %v, want ErrCorrupt", err)
	}
	// The server closed the connection: the client sees the end.
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrTruncated) {
		t.Errorf("client Read = %v, want ErrTruncated", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("server Write after failure succeeded")
	}
}

// TestNoAllocs checks that Write and Read do not allocate once warm.
func TestNoAllocs(t *testing.T) {
	send, recv := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
	msg := randomBytes(64<<10, 3)
	buf := make([]byte, len(msg))
	step := func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := testing.AllocsPerRun(50, step); n != 0 {
		t.Errorf("Write+Read allocate %v times per 64 KiB", n)
	}
	if !bytes.Equal(buf, msg) {
		t.Error("data corrupted")
	}
}

// TestMaxNonce checks that a counter at its end is an error, not a wrap.
func TestMaxNonce(t *testing.T) {
	send, _ := testCipherStates()
	send.SetNonce(noise.MaxNonce + 1)
	w := newConn(&loopConn{}, &Config{Role: RoleClient}, send, nil)
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write past the last nonce succeeded")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write failure did not stick")
	}
}

// TestBuffersFollowTransfers checks that a connection holds a pooled read
// buffer only while a transfer has bytes waiting in it: control-size
// messages use the Conn's small buffer, and a bulk transfer's buffer goes
// back once a small read finds it empty.
func TestBuffersFollowTransfers(t *testing.T) {
	k := keys.MustGenerate()
	c, s := tcpPair(t, testConfig(k, RoleClient), testConfig(k, RoleClient))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	roundTripRead(t, s, "hello")
	if s.r.pooled != nil || s.r.buf != nil {
		t.Errorf("after a small message the reader holds a buffer (pooled: %v)", s.r.pooled != nil)
	}
	if c.w.buf != nil || c.w.pooled != nil {
		t.Errorf("the writer holds a buffer after Write returned")
	}

	data := randomBytes(3<<20+5, 7)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			_, err = c.Write([]byte("done"))
		}
		errc <- err
	}()
	got := make([]byte, len(data))
	for off := 0; off < len(got); {
		n, err := s.Read(got[off:min(off+256<<10, len(got))])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bulk data differs")
	}
	roundTripRead(t, s, "done")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s.r.pooled != nil || s.r.buf != nil {
		t.Errorf("after the transfer and a small read the reader holds a buffer (pooled: %v)", s.r.pooled != nil)
	}
}
