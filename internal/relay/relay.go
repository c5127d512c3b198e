// Package relay is the recon relay: one address in front of several recon
// servers (its backends). It terminates each client's encrypted session
// (key SHARED_KEY_RELAY_TO_CLIENTS), and for each request opens a session of
// its own to a backend (key BACKEND_SHARED_KEY) and forwards the request,
// its replies, state events and file streams, in constant memory and with
// back-pressure: file bytes move through one fixed buffer per request, in
// plain blocking copies.
//
// A submission goes to the least loaded healthy backend (queued + running
// as of its last health check, plus what the relay placed or is uploading
// since; ties in turn). A backend that cannot be reached, or that refuses
// the submission before accepting its files, is skipped without the client
// noticing. A backend lost during the upload, before it had the last file,
// cannot have made a job of it: the client package submits again with the
// same submission id, and the relay places it on another backend (see
// submitOrder). Which backend holds which job is stored durably (SQLite in
// RELAY_STATE_DIR) before the client hears of the job, so status, wait and
// fetch of a job reach its backend, also after the relay restarts. The
// relay's own status sums the healthy backends' job counts; queue lists
// every backend's jobs, each labelled with its backend.
//
// Every BACKEND_HEALTH_INTERVAL_SECONDS each backend is asked for its
// status. A failed check or a failed connection marks it down at once; it
// is up again when a check passes. Requests for a job on a backend that is
// down fail with CodeUnavailable and a message saying so.
//
// Lifecycle: New opens the state; Start listens, checks the backends once
// and starts serving; Shutdown stops everything and returns when every
// goroutine has ended (safe to call more than once).
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/statelock"
)

// Relay is a running relay. Create it with New.
type Relay struct {
	cfg     *config.Relay
	log     *slog.Logger
	opts    Options
	routes  *routeStore
	lock    *os.File
	pool    *pool
	started time.Time
	clients clientTable

	jobsRelayed atomic.Int64
	bytesIn     atomic.Int64
	bytesOut    atomic.Int64

	mu       sync.Mutex
	clientLn net.Listener
	adminLn  net.Listener
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error

	// msgs bounds the memory of the control messages read from clients
	// (the backends' replies come from the site's own servers).
	msgs *protocol.Budget
}

// Options are optional settings for New.
type Options struct {
	// Version is reported by status requests.
	Version string
	// HandshakeTimeout and IdleTimeout override the defaults
	// (HANDSHAKE_TIMEOUT_SECONDS or else listen.HandshakeTimeout, and IDLE_TIMEOUT_SECONDS or else listen.IdleTimeout) of the client and admin listeners
	// and of the sessions to backends; tests shorten them.
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
}

// ErrNoBackendKey is returned by New when BACKEND_SHARED_KEY is not set.
var ErrNoBackendKey = errors.New("BACKEND_SHARED_KEY is not set: set it to the SHARED_KEY of the backend servers (BACKEND_SERVERS)")

// New prepares a relay: it checks the configuration, creates the state
// directory, takes its lock and opens the route store. It does not listen
// or contact a backend yet.
func New(cfg *config.Relay, log *slog.Logger, opts Options) (*Relay, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.BackendSharedKey.IsZero() {
		return nil, fmt.Errorf("%s: %w", cfg.Path, ErrNoBackendKey)
	}
	if len(cfg.BackendServers) == 0 {
		return nil, errors.New("BACKEND_SERVERS is empty: list the recon servers the relay forwards to")
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = cfg.HandshakeTimeout // HANDSHAKE_TIMEOUT_SECONDS
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = listen.HandshakeTimeout
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = cfg.IdleTimeout // IDLE_TIMEOUT_SECONDS
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = listen.IdleTimeout
	}
	interval := cfg.HealthInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("RELAY_STATE_DIR: %w", err)
	}
	lock, err := lockDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	routes, err := openRoutes(filepath.Join(cfg.StateDir, "routes.db"))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open route store: %w", err)
	}
	backendCfg := secure.Config{
		Key:              cfg.BackendSharedKey,
		Role:             secure.RoleClient,
		HandshakeTimeout: min(opts.HandshakeTimeout, BackendDialTimeout),
		IdleTimeout:      opts.IdleTimeout,
	}
	return &Relay{
		cfg:     cfg,
		log:     log,
		opts:    opts,
		routes:  routes,
		lock:    lock,
		pool:    newPool(cfg.BackendServers, backendCfg, interval, log),
		started: time.Now(),
		clients: clientTable{m: map[string]*clientSession{}},
		done:    make(chan struct{}),
		// A message waits for room as long as a session may wait for a
		// byte.
		msgs: protocol.NewBudget(protocol.MessageBudget, opts.IdleTimeout),
	}, nil
}

// lockDir takes an exclusive lock on dir/lock, so two relays never share a
// route store. The lock goes with the process, also on a crash.
func lockDir(dir string) (*os.File, error) {
	f, err := statelock.Acquire(filepath.Join(dir, "lock"))
	if errors.Is(err, statelock.ErrInUse) {
		return nil, fmt.Errorf("%s %s is in use by another %s", "RELAY_STATE_DIR", dir, "recon relay")
	}
	if err != nil {
		return nil, fmt.Errorf("RELAY_STATE_DIR: %w", err)
	}
	return f, nil
}

// Start listens on the client and admin addresses, checks every backend
// once (in parallel, each bounded by the health-check timeout) and starts
// serving and the periodic health checks.
func (r *Relay) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clientLn != nil {
		return errors.New("relay already started")
	}
	cl, err := net.Listen("tcp", r.cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen for clients on %s: %w", r.cfg.Addr(), err)
	}
	al, err := net.Listen("tcp", r.cfg.AdminAddr())
	if err != nil {
		cl.Close()
		return fmt.Errorf("listen for relay admins on %s: %w", r.cfg.AdminAddr(), err)
	}
	r.clientLn, r.adminLn = cl, al
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel

	r.pool.checkAll(ctx)

	clientEP := &listen.Endpoint{
		Name: "client", Listener: cl, Allow: r.cfg.TrustedClientIPs, Handle: r.serveClient,
		Secure: secure.Config{Key: r.cfg.ClientSharedKey, Role: secure.RoleClient, HandshakeTimeout: r.opts.HandshakeTimeout, IdleTimeout: r.opts.IdleTimeout},
	}
	// The admin listener is guarded by its own key and, by default, by
	// listening on loopback only; TRUSTED_CLIENT_IPS is about clients.
	adminEP := &listen.Endpoint{
		Name: "admin", Listener: al, Handle: r.serveAdmin,
		Secure: secure.Config{Key: r.cfg.AdminSharedKey, Role: secure.RoleRelayAdmin, HandshakeTimeout: r.opts.HandshakeTimeout, IdleTimeout: r.opts.IdleTimeout},
	}
	var wg sync.WaitGroup
	wg.Add(2 + len(r.pool.backends))
	go func() { defer wg.Done(); listen.Serve(ctx, clientEP, r.log) }()
	go func() { defer wg.Done(); listen.Serve(ctx, adminEP, r.log) }()
	for _, b := range r.pool.backends {
		go func() { defer wg.Done(); r.pool.watch(ctx, b) }()
	}
	go func() { wg.Wait(); close(r.done) }()

	up, down := r.pool.split()
	r.log.Info("relay started", "version", r.opts.Version, "client_addr", cl.Addr().String(), "admin_addr", al.Addr().String(),
		"backends", len(r.pool.backends), "healthy", len(up), "down", down, "health_interval", r.pool.interval.String())
	return nil
}

// Addr is the client listener's address (nil before Start).
func (r *Relay) Addr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clientLn == nil {
		return nil
	}
	return r.clientLn.Addr()
}

// AdminAddr is the admin listener's address (nil before Start).
func (r *Relay) AdminAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.adminLn == nil {
		return nil
	}
	return r.adminLn.Addr()
}

// Done is closed when every goroutine started by Start has ended.
func (r *Relay) Done() <-chan struct{} { return r.done }

// Shutdown stops accepting, ends every session (a transfer in progress is
// cut; the client sees the connection end and the backend drops the
// partial upload), stops the health checks and closes the route store. It
// waits for all of that, or until ctx ends. Safe to call more than once.
func (r *Relay) Shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		started := r.clientLn != nil
		if started {
			r.clientLn.Close()
			r.adminLn.Close()
			r.cancel()
		}
		r.mu.Unlock()
		if started {
			select {
			case <-r.done:
			case <-ctx.Done():
				r.stopErr = fmt.Errorf("shutdown: %w", ctx.Err())
				return
			}
		}
		if err := r.routes.Close(); err != nil {
			r.stopErr = fmt.Errorf("close route store: %w", err)
		}
		r.lock.Close()
		r.log.Info("relay stopped")
	})
	return r.stopErr
}
