// Package listen runs the accept side of recon's encrypted listeners (the
// server's and the relay's, client and admin alike): the allow-list checked
// right after accept, caps on connections globally and per address, the
// handshake under its deadline, and one goroutine per session that the
// listener waits for.
//
// A connection that has not yet proved its key is cheap to drop: its whole
// handshake (preamble included) runs under one deadline from accept, and
// when an address already has MaxUnauthConnsPerIP connections in the
// handshake, a new one from it evicts the oldest of them instead of being
// refused; when MaxUnauthConns are in the handshake in all, a new one
// evicts the oldest of the address holding the most. Peers that open
// connections and send nothing (or only part of the preamble) therefore
// cannot keep a client with the key out, from their address or another:
// each new connection takes the place of a stale one, and a client's
// handshake takes a round trip.
package listen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/secure"
)

// Limits on connections. Each endpoint applies them on its own.
const (
	MaxConns             = 1024 // open connections, authenticated or not
	MaxConnsPerIP        = 128
	MaxUnauthConns       = 256 // connections still in the handshake; beyond it, a new one evicts the busiest address's oldest
	MaxUnauthConnsPerIP  = 16  // beyond it, a new connection evicts the address's oldest in the handshake
	HandshakeTimeout     = 10 * time.Second
	IdleTimeout          = 5 * time.Minute // a session with no request for this long is closed
	maxAcceptBackoff     = time.Second
	initialAcceptBackoff = 5 * time.Millisecond
)

// Endpoint is one listener with its role, key and session handler.
type Endpoint struct {
	Name     string // "client" or "admin", for logs
	Listener net.Listener
	Secure   secure.Config
	Allow    *allowlist.List // nil allows every address
	// Handle serves one authenticated session; log carries its conn_id,
	// peer and listener. The session is closed (with an orderly end of
	// stream) when Handle returns, and when ctx ends.
	Handle func(ctx context.Context, c *secure.Conn, log *slog.Logger)
	// Failed, when set, is told of each connection whose handshake failed
	// (a wrong key, garbage, a timeout, an eviction). It must not block.
	Failed func(ip netip.Addr)
}

// Serve accepts connections on ep until its listener is closed or ctx
// ends, and returns when every session it started has ended. Accept errors
// back off; refused connections are logged and closed without a word.
func Serve(ctx context.Context, ep *Endpoint, log *slog.Logger) {
	lim := newLimiter()
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := initialAcceptBackoff
	for {
		c, err := ep.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			log.Warn("accept failed; backing off", "listener", ep.Name, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, maxAcceptBackoff)
			continue
		}
		backoff = initialAcceptBackoff
		// Every record about this connection, refusals included, carries
		// its id and peer.
		id := NewConnID()
		clog := log.With("conn_id", id, "peer", c.RemoteAddr().String(), "listener", ep.Name)
		ip := remoteIP(c)
		if !ep.Allow.Allows(ip) {
			clog.Warn("connection refused: address not in the allow-list")
			c.Close()
			continue
		}
		p, evicted := lim.admit(ip, c, clog)
		if p == nil {
			clog.Warn("connection refused: too many connections")
			c.Close()
			continue
		}
		if evicted != nil {
			// Closed without a word, like any connection that has not
			// authenticated; its goroutine ends on the closed connection.
			evicted.log.Warn("connection evicted: the oldest in the handshake from its address, for a newer one",
				"evicted_by", id)
			evicted.conn.Close()
		}
		clog.Debug("connection accepted")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lim.release(ip)
			handshakeAndServe(ctx, ep, c, ip, p, lim, clog)
		}()
	}
}

// handshakeAndServe runs one admitted connection; log carries its conn_id,
// peer and listener.
func handshakeAndServe(ctx context.Context, ep *Endpoint, c net.Conn, ip netip.Addr, p *pending, lim *limiter, log *slog.Logger) {
	defer log.Debug("connection closed")
	// The connection must not outlive ctx: closing it unblocks any read or
	// write in progress.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc, err := secure.Server(ctx, c, ep.Secure)
	evicted := !lim.authenticated(p)
	if err != nil {
		if ep.Failed != nil && ctx.Err() == nil {
			ep.Failed(ip)
		}
		if evicted {
			log.Debug("handshake ended by the eviction", "err", err)
		} else {
			log.Warn("handshake failed", "err", err)
		}
		return
	}
	log.Debug("session authenticated")
	ep.Handle(ctx, sc, log)
	// An orderly end: the peer reads the close record, not a truncation.
	sc.CloseWrite()
	sc.Close()
}

// NewConnID returns a short random connection id for logs.
func NewConnID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limiter counts connections globally and per address, and keeps the
// connections still in the handshake of each address, oldest first.
type limiter struct {
	mu      sync.Mutex
	total   int
	perIP   map[netip.Addr]int
	unauth  int
	pending map[netip.Addr][]*pending
	seq     uint64 // of the last connection admitted
}

// pending is a connection in the handshake.
type pending struct {
	ip   netip.Addr
	conn net.Conn
	log  *slog.Logger
	seq  uint64 // order of admission: lower is older
	done bool   // authenticated, failed or evicted: no longer counted
}

func newLimiter() *limiter {
	return &limiter{perIP: map[netip.Addr]int{}, pending: map[netip.Addr][]*pending{}}
}

// admit reserves a connection slot and a handshake slot for conn from ip,
// or returns nil if a cap on connections is reached. When ip already has
// MaxUnauthConnsPerIP connections in the handshake, the oldest of them
// gives its handshake slot to conn; when all MaxUnauthConns are taken, the
// oldest connection of the address holding the most of them does. The
// connection that gave its slot is returned as evicted: the caller closes
// it.
func (l *limiter) admit(ip netip.Addr, conn net.Conn, log *slog.Logger) (p, evicted *pending) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= MaxConns || l.perIP[ip] >= MaxConnsPerIP {
		return nil, nil
	}
	switch {
	case len(l.pending[ip]) >= MaxUnauthConnsPerIP:
		evicted = l.evictOldest(ip)
	case l.unauth >= MaxUnauthConns:
		evicted = l.evictOldest(l.busiest())
	}
	l.seq++
	p = &pending{ip: ip, conn: conn, log: log, seq: l.seq}
	l.total++
	l.perIP[ip]++
	l.unauth++
	l.pending[ip] = append(l.pending[ip], p)
	return p, evicted
}

// busiest returns the address with the most connections in the handshake;
// of those, the one whose oldest connection is oldest.
func (l *limiter) busiest() netip.Addr {
	var best netip.Addr
	var bq []*pending
	for ip, q := range l.pending {
		if len(q) > len(bq) || (len(q) == len(bq) && q[0].seq < bq[0].seq) {
			best, bq = ip, q
		}
	}
	return best
}

// evictOldest takes the handshake slot of ip's oldest connection in the
// handshake, and returns that connection.
func (l *limiter) evictOldest(ip netip.Addr) *pending {
	q := l.pending[ip]
	old := q[0]
	old.done = true
	if len(q) == 1 {
		delete(l.pending, ip)
	} else {
		l.pending[ip] = q[1:]
	}
	l.unauth--
	return old
}

// authenticated releases the handshake slot of p. It returns false if p
// was evicted (its slot is already gone).
func (l *limiter) authenticated(p *pending) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.done {
		return false
	}
	p.done = true
	l.unauth--
	q := l.pending[p.ip]
	for i, x := range q {
		if x == p {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(l.pending, p.ip)
	} else {
		l.pending[p.ip] = q
	}
	return true
}

// release frees the connection slot of ip.
func (l *limiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}
