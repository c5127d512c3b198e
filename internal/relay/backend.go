package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// Timeouts toward backends.
const (
	// BackendDialTimeout bounds connecting to a backend: TCP connect and
	// handshake.
	BackendDialTimeout = 5 * time.Second
	// backendReplyTimeout bounds the answer to a short request (status,
	// job status, queue).
	backendReplyTimeout = 30 * time.Second
	// minCheckTimeout and maxCheckTimeout bound a health check; within
	// them it gets one health interval. A backend whose cores are all
	// busy reconstructing (or a relay on a loaded machine) may take more
	// than a second to connect, shake hands and answer a status request:
	// at one second, such a backend was marked down while it was well.
	// A stopped or killed backend refuses the connection at once, so the
	// minimum only bounds how soon a frozen or unreachable one is found.
	minCheckTimeout = 3 * time.Second
	maxCheckTimeout = 10 * time.Second
)

// backend is one recon server behind the relay. Its fields are guarded by
// the pool's mutex.
type backend struct {
	addr string

	healthy   bool
	lastCheck time.Time // when the last health check ended
	lastErr   string    // why it was last marked down
	lastErrAt time.Time
	downSince time.Time
	latency   time.Duration // of the last passed check
	version   string
	protocol  int // the backend's application protocol, from the last passed check (0: not known)
	// actAs: the backend takes the relay's client identities (act_as):
	// its RELAY_SHARED_KEY is BACKEND_SHARED_KEY. Without it every job
	// through the relay belongs to the identity of BACKEND_SHARED_KEY.
	actAs     bool
	actAsSeen bool // actAs was learnt from a check
	queued    int  // from the last check, plus jobs placed since
	running   int
	workers   int // the backend's maximum of concurrent jobs, from the last check
	uploading int // submissions in progress toward it
	placed    int64
}

// pool is the set of backends with their health. All methods are safe for
// concurrent use.
type pool struct {
	log      *slog.Logger
	secure   secure.Config // role client, BACKEND_SHARED_KEY
	interval time.Duration

	mu       sync.Mutex
	backends []*backend // in BACKEND_SERVERS order
	byAddr   map[string]*backend
	next     int // where the next tie-break starts, in turn
}

func newPool(addrs []string, sc secure.Config, interval time.Duration, log *slog.Logger) *pool {
	p := &pool{log: log, secure: sc, interval: interval, byAddr: map[string]*backend{}}
	for _, a := range addrs {
		b := &backend{addr: a}
		p.backends = append(p.backends, b)
		p.byAddr[a] = b
	}
	return p
}

func (p *pool) get(addr string) *backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byAddr[addr]
}

func (p *pool) isHealthy(b *backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return b.healthy
}

// split returns the healthy backends and the addresses of the others.
func (p *pool) split() (up []*backend, down []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.backends {
		if b.healthy {
			up = append(up, b)
		} else {
			down = append(down, b.addr)
		}
	}
	return up, down
}

// reserve counts a submission in progress toward b, so that concurrent
// submissions spread. release undoes it, counting a placed job when the
// backend accepted it.
func (p *pool) reserve(b *backend) {
	p.mu.Lock()
	b.uploading++
	p.mu.Unlock()
}

func (p *pool) release(b *backend, placed bool) {
	p.mu.Lock()
	b.uploading--
	if placed {
		b.queued++
		b.placed++
	}
	p.mu.Unlock()
}

// markDown marks b down at once after a failed connection or check.
func (p *pool) markDown(b *backend, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	b.lastErr, b.lastErrAt = err.Error(), now
	if b.healthy {
		b.healthy = false
		b.downSince = now
		p.log.Warn("backend down", "backend", b.addr, "err", err)
	}
}

// markUp records a passed health check that started at started. A check
// that started before the backend was last marked down says nothing about
// it now (it may have passed just before the backend was killed), and is
// ignored: only a later check brings the backend up again.
func (p *pool) markUp(b *backend, st *protocol.StatusReply, started time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !b.lastErrAt.IsZero() && !started.After(b.lastErrAt) {
		return
	}
	latency := time.Since(started)
	if !b.healthy {
		if b.lastCheck.IsZero() && b.lastErr == "" {
			p.log.Info("backend up", "backend", b.addr, "version", st.Version)
		} else {
			p.log.Info("backend up again", "backend", b.addr, "version", st.Version, "down_for", time.Since(b.downSince).Round(time.Millisecond).String())
		}
	}
	if !b.actAsSeen || b.actAs != st.RelaySession {
		if st.RelaySession {
			p.log.Info("backend takes the relay's client identities", "backend", b.addr)
		} else {
			p.log.Warn("backend does not take the relay's client identities: BACKEND_SHARED_KEY is a client key there, not its RELAY_SHARED_KEY, "+
				"so every job through the relay to it belongs to that key's identity, and the relay's clients see each other's jobs on it",
				"backend", b.addr)
		}
	}
	b.actAs, b.actAsSeen = st.RelaySession, true
	b.healthy = true
	b.lastCheck = time.Now()
	b.latency = latency
	b.version = st.Version
	b.protocol = st.Protocol
	b.queued = st.Jobs[protocol.StateQueued]
	b.running = st.Jobs[protocol.StateRunning]
	b.workers = st.MaxWorkers
}

func (p *pool) checkFailed(b *backend, err error) {
	p.mu.Lock()
	b.lastCheck = time.Now()
	p.mu.Unlock()
	p.markDown(b, err)
}

// dial opens a session to b for a client of identity: a backend that
// takes the relay's client identities is told it first (act_as, which has
// no reply). With hash BLAKE3 (the client's session chose it) the session
// then says hello choosing BLAKE3, so that the backend checks the client's
// BLAKE3 digests and gives its results' BLAKE3; "" or SHA-256 says no
// hello (SHA-256). A failure to connect marks b down; a backend that
// refuses the hello stays up, and the error is CodeUnavailable.
func (p *pool) dial(ctx context.Context, b *backend, identity, hash string) (*secure.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, BackendDialTimeout)
	defer cancel()
	c, err := secure.Dial(dctx, b.addr, p.secure)
	if err == nil && identity != "" && p.takesIdentities(b) {
		c.SetWriteDeadline(time.Now().Add(BackendDialTimeout))
		err = protocol.WriteMessage(c, protocol.TypeActAs, protocol.ActAs{Identity: identity})
		c.SetWriteDeadline(time.Time{})
		if err != nil {
			c.Close()
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			p.markDown(b, err)
		}
		return nil, err
	}
	if hash == protocol.HashBLAKE3 {
		if err := helloBackend(dctx, c, hash); err != nil {
			c.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p.log.Warn("backend refused the hello of a BLAKE3 session", "backend", b.addr, "err", err)
			return nil, protocol.Errorf(protocol.CodeUnavailable, "backend %s did not take this session's hash (BLAKE3): %v", b.addr, rpc.Truncate(err.Error(), 200))
		}
	}
	return c, nil
}

// helloBackend says hello on a new backend session c, offering hash only,
// and checks that the backend chose it.
func helloBackend(ctx context.Context, c *secure.Conn, hash string) error {
	var rep protocol.HelloReply
	if err := roundTrip(ctx, c, protocol.TypeHello, protocol.Hello{Hashes: []string{hash}}, protocol.TypeHelloReply, &rep); err != nil {
		return err
	}
	if rep.Hash != hash {
		return fmt.Errorf("it chose %q", rpc.Truncate(rep.Hash, 20))
	}
	return nil
}

// allSpeak reports whether every backend passed a health check saying it
// speaks application protocol v or later: only then may a client's
// session through the relay choose what v brought (BLAKE3, version 3),
// wherever its job goes.
func (p *pool) allSpeak(v int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.backends {
		if b.protocol < v {
			return false
		}
	}
	return true
}

func (p *pool) takesIdentities(b *backend) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return b.actAs
}

// failed marks b down after a session to it broke, unless ctx ended (the
// relay is stopping or the client went away).
func (p *pool) failed(ctx context.Context, b *backend, err error) {
	if ctx.Err() != nil {
		return
	}
	p.markDown(b, err)
}

// checkTimeout is the time one health check may take.
func (p *pool) checkTimeout() time.Duration {
	return min(max(p.interval, minCheckTimeout), maxCheckTimeout)
}

// checkAll checks every backend once, in parallel, and returns when all
// checks have ended.
func (p *pool) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range p.backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.check(ctx, b)
		}()
	}
	wg.Wait()
}

// watch checks b every health interval until ctx ends.
func (p *pool) watch(ctx context.Context, b *backend) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.check(ctx, b)
	}
}

// check asks b for its status and records the outcome.
func (p *pool) check(ctx context.Context, b *backend) {
	cctx, cancel := context.WithTimeout(ctx, p.checkTimeout())
	defer cancel()
	start := time.Now()
	st, err := p.status(cctx, b)
	if ctx.Err() != nil {
		return // stopping: not the backend's fault
	}
	if err != nil {
		p.checkFailed(b, fmt.Errorf("health check: %w", err))
		return
	}
	p.markUp(b, st, start)
}

// status asks b for its status on a session of its own.
func (p *pool) status(ctx context.Context, b *backend) (*protocol.StatusReply, error) {
	c, err := secure.Dial(ctx, b.addr, p.secure)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var st protocol.StatusReply
	if err := roundTrip(ctx, c, protocol.TypeStatus, protocol.Empty{}, protocol.TypeStatusReply, &st); err != nil {
		return nil, err
	}
	c.CloseWrite()
	return &st, nil
}

// roundTrip sends one request on c and decodes its one reply, within
// ctx's deadline (or backendReplyTimeout). A wire error from the backend
// is returned as a *protocol.Error.
func roundTrip(ctx context.Context, c *secure.Conn, t protocol.Type, body any, want protocol.Type, reply any) error {
	ctx, cancel := replyBound(ctx)
	defer cancel()
	return rpc.Call(ctx, c, t, body, want, reply)
}

// replyBound bounds ctx by backendReplyTimeout if it has no deadline.
func replyBound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, backendReplyTimeout)
}

// isWireError reports whether err is an error the backend sent, as
// opposed to a broken connection.
func isWireError(err error) bool {
	var pe *protocol.Error
	return errors.As(err, &pe)
}

// snapshot describes every backend, in BACKEND_SERVERS order.
func (p *pool) snapshot() []protocol.BackendInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]protocol.BackendInfo, 0, len(p.backends))
	for _, b := range p.backends {
		out = append(out, protocol.BackendInfo{
			Address:        b.addr,
			Healthy:        b.healthy,
			LastCheck:      b.lastCheck.UTC(),
			LastError:      b.lastErr,
			LastErrorAt:    b.lastErrAt.UTC(),
			LatencySeconds: b.latency.Seconds(),
			Version:        b.version,
			Queued:         b.queued,
			Running:        b.running,
			Workers:        b.workers,
			FreeWorkers:    b.free(),
			Uploading:      b.uploading,
			JobsPlaced:     b.placed,

			TakesIdentities: b.actAs,
		})
	}
	return out
}
