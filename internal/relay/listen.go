package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/secure"
)

// Limits on connections, the same as a server's. Each listener applies
// them on its own.
const (
	MaxConns             = 1024 // open connections, authenticated or not
	MaxConnsPerIP        = 128
	MaxUnauthConns       = 256 // connections still in the handshake
	MaxUnauthConnsPerIP  = 16
	HandshakeTimeout     = 10 * time.Second
	IdleTimeout          = 5 * time.Minute // a session with no request for this long is closed
	maxAcceptBackoff     = time.Second
	initialAcceptBackoff = 5 * time.Millisecond
)

// connLimiter counts connections globally and per address.
type connLimiter struct {
	mu          sync.Mutex
	total       int
	perIP       map[netip.Addr]int
	unauth      int
	unauthPerIP map[netip.Addr]int
}

func newConnLimiter() *connLimiter {
	return &connLimiter{perIP: map[netip.Addr]int{}, unauthPerIP: map[netip.Addr]int{}}
}

// admit reserves a connection slot and an unauthenticated slot for ip.
func (l *connLimiter) admit(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= MaxConns || l.perIP[ip] >= MaxConnsPerIP ||
		l.unauth >= MaxUnauthConns || l.unauthPerIP[ip] >= MaxUnauthConnsPerIP {
		return false
	}
	l.total++
	l.perIP[ip]++
	l.unauth++
	l.unauthPerIP[ip]++
	return true
}

// authenticated releases the unauthenticated slot of ip.
func (l *connLimiter) authenticated(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unauth--
	if l.unauthPerIP[ip]--; l.unauthPerIP[ip] <= 0 {
		delete(l.unauthPerIP, ip)
	}
}

// release frees the connection slot of ip.
func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// endpoint is one listener with its role, key and handler.
type endpoint struct {
	name    string // "client" or "admin", for logs
	ln      net.Listener
	secure  secure.Config
	allow   *allowlist.List // nil allows every address
	limiter *connLimiter
	handle  func(ctx context.Context, c *secure.Conn, log *slog.Logger)
}

// serve accepts connections until ln is closed, and returns when every
// connection it started has ended.
func (r *Relay) serve(ctx context.Context, ep *endpoint) {
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := initialAcceptBackoff
	for {
		c, err := ep.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			r.log.Warn("accept failed; backing off", "listener", ep.name, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, maxAcceptBackoff)
			continue
		}
		backoff = initialAcceptBackoff
		ip := remoteIP(c)
		if !ep.allow.Allows(ip) {
			r.log.Warn("connection refused: address not in TRUSTED_CLIENT_IPS", "listener", ep.name, "peer", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if !ep.limiter.admit(ip) {
			r.log.Warn("connection refused: too many connections", "listener", ep.name, "peer", c.RemoteAddr().String())
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ep.limiter.release(ip)
			r.handshakeAndServe(ctx, ep, c, ip)
		}()
	}
}

func (r *Relay) handshakeAndServe(ctx context.Context, ep *endpoint, c net.Conn, ip netip.Addr) {
	connID := newConnID()
	log := r.log.With("conn_id", connID, "peer", c.RemoteAddr().String(), "listener", ep.name)
	// The connection must not outlive the relay: closing it unblocks any
	// read or write in progress.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc, err := secure.Server(ctx, c, ep.secure)
	ep.limiter.authenticated(ip)
	if err != nil {
		log.Warn("handshake failed", "err", err)
		return
	}
	log.Debug("session authenticated")
	ep.handle(ctx, sc, log)
	// An orderly end: the peer reads the close record, not a truncation.
	sc.CloseWrite()
	sc.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
