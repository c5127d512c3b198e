// Package listen runs the accept side of recon's encrypted listeners (the
// server's and the relay's, client and admin alike): the allow-list checked
// right after accept, caps on connections globally and per address, the
// handshake under its deadline, and one goroutine per session that the
// listener waits for.
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
	MaxUnauthConns       = 256 // connections still in the handshake
	MaxUnauthConnsPerIP  = 16
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
		clog := log.With("conn_id", NewConnID(), "peer", c.RemoteAddr().String(), "listener", ep.Name)
		ip := remoteIP(c)
		if !ep.Allow.Allows(ip) {
			clog.Warn("connection refused: address not in the allow-list")
			c.Close()
			continue
		}
		if !lim.admit(ip) {
			clog.Warn("connection refused: too many connections")
			c.Close()
			continue
		}
		clog.Debug("connection accepted")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lim.release(ip)
			handshakeAndServe(ctx, ep, c, ip, lim, clog)
		}()
	}
}

// handshakeAndServe runs one admitted connection; log carries its conn_id,
// peer and listener.
func handshakeAndServe(ctx context.Context, ep *Endpoint, c net.Conn, ip netip.Addr, lim *limiter, log *slog.Logger) {
	defer log.Debug("connection closed")
	// The connection must not outlive ctx: closing it unblocks any read or
	// write in progress.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc, err := secure.Server(ctx, c, ep.Secure)
	lim.authenticated(ip)
	if err != nil {
		log.Warn("handshake failed", "err", err)
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

// limiter counts connections globally and per address.
type limiter struct {
	mu          sync.Mutex
	total       int
	perIP       map[netip.Addr]int
	unauth      int
	unauthPerIP map[netip.Addr]int
}

func newLimiter() *limiter {
	return &limiter{perIP: map[netip.Addr]int{}, unauthPerIP: map[netip.Addr]int{}}
}

// admit reserves a connection slot and an unauthenticated slot for ip.
func (l *limiter) admit(ip netip.Addr) bool {
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
func (l *limiter) authenticated(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unauth--
	if l.unauthPerIP[ip]--; l.unauthPerIP[ip] <= 0 {
		delete(l.unauthPerIP, ip)
	}
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
