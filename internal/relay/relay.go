// Package relay is the recon relay: one address in front of several recon
// servers (its backends). It terminates each client's encrypted session
// (key SHARED_KEY_RELAY_TO_CLIENTS), and for each request opens a session of
// its own to a backend (key BACKEND_SHARED_KEY) and forwards the request,
// its replies, state events and file streams, in constant memory and with
// back-pressure: file bytes cross with secure.Forward, each record opened
// in the buffer it arrived in and sealed for the other session from there,
// and what is sealed is sent before the relay reads more.
//
// A submission goes to the healthy backend with the most free workers,
// then the shortest queue (as of its last health check, plus what the
// relay placed or is uploading since; ties in turn; see candidates). A backend that cannot be reached, or that refuses
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
// Lifecycle (internal/daemon): New opens the state; Start listens, checks
// the backends once and starts serving; Shutdown stops everything, waits
// for every goroutine and closes the route store (safe to call more than
// once; the store and the state lock are released even when its ctx ends
// first, as soon as the goroutines have ended).
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
	"github.com/recon-mri/recon/internal/daemon"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/statelock"
)

// Relay is a running relay. Create it with New.
type Relay struct {
	cfg     *config.Relay
	log     *slog.Logger
	opts    Options
	routes  *routeStore
	pool    *pool
	life    *daemon.Lifecycle // owns the goroutines, the route store and the state dir's lock
	started time.Time
	clients clientTable

	// keyring holds the clients' keys (identity.go); identities the
	// identities last loaded, for a reload's reply.
	keyring    *secure.Keyring
	idMu       sync.Mutex
	identities map[string][]keys.Key

	jobsRelayed atomic.Int64
	bytesIn     atomic.Int64
	bytesOut    atomic.Int64

	// msgs bounds the memory of the control messages read from clients
	// (the backends' replies come from the site's own servers).
	msgs *protocol.Budget
	// clientMux and adminMux answer the requests of the two listeners.
	clientMux *rpc.Mux[*clientSession]
	adminMux  *rpc.Mux[struct{}]
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
var ErrNoBackendKey = errors.New("BACKEND_SHARED_KEY is not set: set it to the RELAY_SHARED_KEY (or a client key) of the backend servers (BACKEND_SERVERS)")

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
	keyring, identities, err := newClientKeyring(cfg)
	if err != nil {
		return nil, err
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
	// One relay per route store. The lock goes with the process, also on
	// a crash.
	lock, err := statelock.AcquireDir(cfg.StateDir, "lock", "RELAY_STATE_DIR", "recon relay")
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
	r := &Relay{
		cfg:     cfg,
		log:     log,
		opts:    opts,
		routes:  routes,
		pool:    newPool(cfg.BackendServers, backendCfg, interval, log),
		life:    daemon.New(log, "relay"),
		started: time.Now(),
		clients: clientTable{m: map[string]*clientSession{}},
		keyring: keyring, identities: identities,
		// A message waits for room as long as a session may wait for a
		// byte.
		msgs: protocol.NewBudget(protocol.MessageBudget, opts.IdleTimeout),
	}
	r.clientMux, r.adminMux = r.clientRequests(), r.adminRequests()
	r.life.Hold("state lock", lock)
	r.life.Hold("route store", routes) // closed first
	return r, nil
}

// Start listens on the client and admin addresses, checks every backend
// once (in parallel, each bounded by the health-check timeout) and starts
// serving and the periodic health checks. When it fails, Shutdown closes
// what it opened.
func (r *Relay) Start() error {
	if r.life.Addr("client") != nil {
		return errors.New("relay already started")
	}
	cl, err := r.life.Listen("client", r.cfg.Addr())
	if err != nil {
		return fmt.Errorf("listen for clients on %s: %w", r.cfg.Addr(), err)
	}
	al, err := r.life.Listen("admin", r.cfg.AdminAddr())
	if err != nil {
		return fmt.Errorf("listen for relay admins on %s: %w", r.cfg.AdminAddr(), err)
	}
	r.pool.checkAll(r.life.Context())

	clientEP := &listen.Endpoint{
		Name: "client", Listener: cl, Allow: r.cfg.TrustedClientIPs, Handle: r.serveClient,
		Secure: secure.Config{Keys: r.keyring, Role: secure.RoleClient, HandshakeTimeout: r.opts.HandshakeTimeout, IdleTimeout: r.opts.IdleTimeout},
	}
	// The admin listener is guarded by its own key and, by default, by
	// listening on loopback only; TRUSTED_CLIENT_IPS is about clients.
	adminEP := &listen.Endpoint{
		Name: "admin", Listener: al, Handle: r.serveAdmin,
		Secure: secure.Config{Key: r.cfg.AdminSharedKey, Role: secure.RoleRelayAdmin, HandshakeTimeout: r.opts.HandshakeTimeout, IdleTimeout: r.opts.IdleTimeout},
	}
	loops := map[string]func(context.Context){
		"client listener": func(ctx context.Context) { listen.Serve(ctx, clientEP, r.log) },
		"admin listener":  func(ctx context.Context) { listen.Serve(ctx, adminEP, r.log) },
	}
	for _, b := range r.pool.backends { // each address once: the config refuses one listed twice
		loops["health check of "+b.addr] = func(ctx context.Context) { r.pool.watch(ctx, b) }
	}
	for name, run := range loops {
		if err := r.life.Go(name, run); err != nil {
			return fmt.Errorf("start relay: %w", err) // Shutdown began meanwhile: it ends what started
		}
	}

	up, down := r.pool.split()
	r.log.Info("relay started", "version", r.opts.Version, "client_addr", cl.Addr().String(), "admin_addr", al.Addr().String(),
		"backends", len(r.pool.backends), "healthy", len(up), "down", down, "health_interval", r.pool.interval.String())
	return nil
}

// Addr is the client listener's address (nil before Start).
func (r *Relay) Addr() net.Addr { return r.life.Addr("client") }

// AdminAddr is the admin listener's address (nil before Start).
func (r *Relay) AdminAddr() net.Addr { return r.life.Addr("admin") }

// Done is closed when Shutdown has begun and every goroutine started by
// Start has ended.
func (r *Relay) Done() <-chan struct{} { return r.life.Done() }

// Shutdown stops accepting, ends every session (a transfer in progress is
// cut; the client sees the connection end and the backend drops the
// partial upload), stops the health checks and closes the route store. It
// waits for all of that, or until ctx ends: then it returns ctx's error,
// and the route store and the state lock are closed as soon as the last
// goroutine has ended. Safe to call more than once; a later call waits
// again.
func (r *Relay) Shutdown(ctx context.Context) error { return r.life.Shutdown(ctx) }
