package secure

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// testTimeout bounds every test connection: handshakes, reads and writes.
const testTimeout = 10 * time.Second

func testConfig(k keys.Key, r Role) Config {
	return Config{Key: k, Role: r, HandshakeTimeout: testTimeout}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// listen starts a TCP listener on a random loopback port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

type serverResult struct {
	conn    *Conn
	err     error
	written int64 // bytes the server wrote on the raw connection
}

// serveOne accepts one connection on ln and runs Server on it, counting what
// the server writes. The result arrives on the returned channel.
func serveOne(ctx context.Context, ln net.Listener, cfg Config) <-chan serverResult {
	ch := make(chan serverResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ch <- serverResult{err: err}
			return
		}
		cc := &countingConn{Conn: raw}
		c, err := Server(ctx, cc, cfg)
		ch <- serverResult{conn: c, err: err, written: cc.n()}
	}()
	return ch
}

// tcpPair returns a connected client and server over loopback TCP, with
// deadlines that bound the test.
func tcpPair(t testing.TB, ccfg, scfg Config) (client, server *Conn) {
	t.Helper()
	ctx := testContext(t)
	ln := listen(t)
	ch := serveOne(ctx, ln, scfg)
	client, err := Dial(ctx, ln.Addr().String(), ccfg)
	if err != nil {
		_ = ln.Close()
		<-ch
		t.Fatalf("Dial: %v", err)
	}
	res := <-ch
	if res.err != nil {
		_ = client.Close()
		t.Fatalf("Server: %v", res.err)
	}
	server = res.conn
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	deadline := time.Now().Add(testTimeout)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	return client, server
}

// countingConn counts the bytes written through it.
type countingConn struct {
	net.Conn
	mu      sync.Mutex
	written int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.written += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingConn) n() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written
}

// memConn is one end of an in-memory connection that, unlike net.Pipe,
// can half-close: each direction is its own net.Pipe. What it writes can be
// recorded, tampered with (one bit flipped) or cut off at a byte offset.
type memConn struct {
	r, w net.Conn

	mu      sync.Mutex
	off     int           // bytes written so far
	flipAt  int           // offset of the byte whose bit (flipAt % 8) is flipped; -1 for none
	cutAt   int           // offset from which bytes are dropped and the write side closed; -1 for none
	record  *bytes.Buffer // if not nil, receives everything written (before tampering)
	writeFn func(p []byte) []byte
}

// memPipe returns the two ends of an in-memory connection. Its deadlines
// start at testTimeout from now, so that a test cannot hang on it.
func memPipe() (a, b *memConn) {
	ar, bw := net.Pipe()
	br, aw := net.Pipe()
	deadline := time.Now().Add(testTimeout)
	for _, p := range []net.Conn{ar, bw, br, aw} {
		_ = p.SetDeadline(deadline)
	}
	a = &memConn{r: ar, w: aw, flipAt: -1, cutAt: -1}
	b = &memConn{r: br, w: bw, flipAt: -1, cutAt: -1}
	return a, b
}

func (m *memConn) Read(p []byte) (int, error) { return m.r.Read(p) }

func (m *memConn) Write(p []byte) (int, error) {
	m.mu.Lock()
	start := m.off
	m.off += len(p)
	if m.record != nil {
		m.record.Write(p)
	}
	flipAt, cutAt := m.flipAt, m.cutAt
	m.mu.Unlock()

	out := p
	if flipAt >= start && flipAt < start+len(p) {
		out = bytes.Clone(p)
		out[flipAt-start] ^= 1 << (flipAt % 8)
	}
	if cutAt >= 0 && cutAt < start+len(p) {
		keep := max(cutAt-start, 0)
		if keep > 0 {
			if _, err := m.w.Write(out[:keep]); err != nil {
				return 0, err
			}
		}
		_ = m.w.Close()
		return len(p), nil // pretend: the writer does not learn of the cut
	}
	if _, err := m.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *memConn) CloseWrite() error { return m.w.Close() }

func (m *memConn) Close() error {
	err1 := m.r.Close()
	err2 := m.w.Close()
	return errors.Join(err1, err2)
}

func (m *memConn) LocalAddr() net.Addr  { return m.r.LocalAddr() }
func (m *memConn) RemoteAddr() net.Addr { return m.r.RemoteAddr() }

func (m *memConn) SetDeadline(t time.Time) error {
	return errors.Join(m.r.SetReadDeadline(t), m.w.SetWriteDeadline(t))
}
func (m *memConn) SetReadDeadline(t time.Time) error  { return m.r.SetReadDeadline(t) }
func (m *memConn) SetWriteDeadline(t time.Time) error { return m.w.SetWriteDeadline(t) }

// scriptConn is a connection whose reads come from a fixed byte string and
// whose writes are discarded. After the script it returns io.EOF, or, if
// block is set, records that a read was attempted and returns an error.
type scriptConn struct {
	in          []byte
	block       bool
	readPastEnd bool
	written     int
	chunk       int // if > 0, at most this many bytes per Read
}

var errPastScript = errors.New("read past the end of the script")

func (s *scriptConn) Read(p []byte) (int, error) {
	if len(s.in) == 0 {
		if s.block {
			s.readPastEnd = true
			return 0, errPastScript
		}
		return 0, io.EOF
	}
	n := len(p)
	if s.chunk > 0 {
		n = min(n, s.chunk)
	}
	n = copy(p[:n], s.in)
	s.in = s.in[n:]
	return n, nil
}

func (s *scriptConn) Write(p []byte) (int, error)      { s.written += len(p); return len(p), nil }
func (s *scriptConn) Close() error                     { return nil }
func (s *scriptConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (s *scriptConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (s *scriptConn) SetDeadline(time.Time) error      { return nil }
func (s *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (s *scriptConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }

// loopConn is an in-memory connection to itself: what is written is read
// back. It never blocks; reading an empty loopConn returns io.EOF.
type loopConn struct {
	buf []byte
	pos int
}

func (l *loopConn) Write(p []byte) (int, error) {
	if l.pos == len(l.buf) {
		l.buf, l.pos = l.buf[:0], 0
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func (l *loopConn) Read(p []byte) (int, error) {
	if l.pos == len(l.buf) {
		return 0, io.EOF
	}
	n := copy(p, l.buf[l.pos:])
	l.pos += n
	return n, nil
}

func (l *loopConn) Close() error                     { return nil }
func (l *loopConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (l *loopConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (l *loopConn) SetDeadline(time.Time) error      { return nil }
func (l *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (l *loopConn) SetWriteDeadline(time.Time) error { return nil }

// readAll reads c to its end and returns what it read and the error that
// ended it (io.EOF for a clean end, unlike io.ReadAll).
func readAll(c io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
