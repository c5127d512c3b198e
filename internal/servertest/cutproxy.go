package servertest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// CutProxy forwards TCP connections on 127.0.0.1 to a target. It cuts its
// first connection (closing both sides) once it has forwarded cutAfter
// client-to-target bytes, and forwards the later ones untouched: a network
// that breaks in the middle of an upload, once. It counts the
// client-to-target bytes of each connection.
type CutProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64
	down     bool          // count the cut in target-to-client bytes
	cut      chan struct{} // closed once the first connection is cut

	mu      sync.Mutex
	refuse  int     // connections after the first to close at once
	refused int     // connections closed at once so far
	up      []int64 // client-to-target bytes, per connection
	conns   []net.Conn
	closed  bool
	wg      sync.WaitGroup
}

// StartCutProxy starts a CutProxy in front of target; it stops when the
// test ends.
func StartCutProxy(t testing.TB, target string, cutAfter int64) *CutProxy {
	return startCutProxy(t, target, cutAfter, false)
}

// StartCutProxyDown is StartCutProxy for a download: the first connection
// is cut once cutAfter target-to-client bytes have been forwarded.
func StartCutProxyDown(t testing.TB, target string, cutAfter int64) *CutProxy {
	return startCutProxy(t, target, cutAfter, true)
}

func startCutProxy(t testing.TB, target string, cutAfter int64, down bool) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln, target: target, cutAfter: cutAfter, down: down, cut: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// RefuseNext makes p close the next n connections after its first at
// once, unanswered, as a busy server over its caps closes a session. Call
// it before the first connection.
func (p *CutProxy) RefuseNext(n int) {
	p.mu.Lock()
	p.refuse = n
	p.mu.Unlock()
}

// Refused is the number of connections closed at once (RefuseNext).
func (p *CutProxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Addr is the address clients dial instead of the target's.
func (p *CutProxy) Addr() string { return p.ln.Addr().String() }

// Cut is closed once the first connection has been cut (after all its
// cutAfter bytes were forwarded, before either side sees the cut).
func (p *CutProxy) Cut() <-chan struct{} { return p.cut }

// Up returns the client-to-target bytes forwarded on each connection so
// far, in the order they were accepted.
func (p *CutProxy) Up() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.up...)
}

// UpTotal returns the client-to-target bytes of all connections.
func (p *CutProxy) UpTotal() int64 {
	var n int64
	for _, u := range p.Up() {
		n += u
	}
	return n
}

func (p *CutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := len(p.up) > 0 && p.refuse > 0
		if refuse {
			p.refuse--
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 10*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		i := len(p.up)
		p.up = append(p.up, 0)
		p.conns = append(p.conns, c, s)
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(c.(*net.TCPConn), s.(*net.TCPConn), i)
	}
}

// upWriter adds what it writes to connection i's count.
type upWriter struct {
	p *CutProxy
	w io.Writer
	i int
}

func (u upWriter) Write(b []byte) (int, error) {
	n, err := u.w.Write(b)
	u.p.mu.Lock()
	u.p.up[u.i] += int64(n)
	u.p.mu.Unlock()
	return n, err
}

func (p *CutProxy) forward(c, s *net.TCPConn, i int) {
	defer p.wg.Done()
	defer c.Close()
	defer s.Close()
	up := upWriter{p, s, i}
	// pipe forwards one direction; on the first connection, in the cut
	// direction, exactly cutAfter bytes and then both sides are closed
	// (the receiver reads every forwarded byte before it sees the end).
	pipe := func(dst io.Writer, half *net.TCPConn, src *net.TCPConn, cut bool) {
		if cut {
			if n, _ := io.CopyN(dst, src, p.cutAfter); n == p.cutAfter {
				close(p.cut)
			}
			c.Close()
			s.Close()
			return
		}
		io.Copy(dst, src)
		half.CloseWrite()
	}
	first := i == 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(c, c, s, first && p.down)
	}()
	pipe(up, s, c, first && !p.down)
	<-done
}

// close stops accepting, ends every connection and waits for the
// forwarding goroutines.
func (p *CutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
