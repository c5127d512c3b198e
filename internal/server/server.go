// Package server is the recon reconstruction server: it accepts encrypted
// client and admin sessions, stores uploaded files durably, queues jobs in
// the job store, runs the reconstruction script in a pool of workers and
// returns the results.
//
// A session (session.go) reads requests one at a time; a submission is an
// upload (upload.go) that owns its directory and disk reservation until
// the job is created in the store. The pool (pool.go, worker.go) owns job
// execution: its workers claim queued jobs, run each attempt through an
// executor (executor.go; the local one, local.go, runs the script with
// package runner), collect the results and record the end. A fetch
// (results.go) streams the results and removes them once the client has
// them. docs/ARCHITECTURE.md draws the whole path.
//
// Lifecycle (internal/daemon): New opens the store and recovers from a
// crash (the store re-queues or fails the jobs that were running, the
// executor ends what their attempts left running, leftover uploads are
// swept); Start listens and starts the job pool, the expiry sweeps and the
// metrics endpoint, each a goroutine of the lifecycle; Shutdown stops
// everything, waits for every goroutine and closes the store (safe to call
// more than once; the store and the state lock are released even when its
// ctx ends first, as soon as the goroutines have ended).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/audit"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/daemon"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/statelock"
)

// Server is a running recon server. Create it with New.
type Server struct {
	cfg     *config.Server
	log     *slog.Logger
	version string
	opts    Options
	store   *jobs.Store
	started time.Time
	life    *daemon.Lifecycle // owns the goroutines, the store and the state dir's lock

	changed  *notifier // broadcast on every job state change
	uploads  *reservations
	partials *partials  // broken uploads kept for resuming, by submission id
	caps     spaceCaps  // of the space held for clients (space.go)
	evictMu  sync.Mutex // one submission at a time makes room

	pool    *pool
	pacs    *deliverer // PACS delivery (pacs.go)
	metrics *metrics

	// msgs bounds the memory of the control messages being read.
	msgs *protocol.Budget
	// clientMux and adminMux answer the requests of the two listeners.
	clientMux, adminMux *rpc.Mux[*sessionState]
	// ids are the client identities and their open sessions (identity.go).
	ids *identities

	auditLog     *audit.Log      // audit.go
	authFailures *audit.Failures // failed handshakes, summarised into auditLog
}

// Options are optional settings for New.
type Options struct {
	// Version is reported by status requests.
	Version string
	// HandshakeTimeout and IdleTimeout override the defaults
	// (HANDSHAKE_TIMEOUT_SECONDS or else listen.HandshakeTimeout, and
	// IDLE_TIMEOUT_SECONDS or else listen.IdleTimeout); tests shorten them.
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	// Sampler reads CPU load and available memory for the resource gate;
	// nil uses the operating system's figures.
	Sampler Sampler
	// KillGrace is how long a cancelled script has between SIGTERM and
	// SIGKILL (0: KILL_GRACE_SECONDS, or else the runner's default, 10 s).
	KillGrace time.Duration
	// AuditRotateBytes is the size past which the audit file rotates (0:
	// audit.DefaultRotateBytes); AuditInterval is how often failed
	// handshakes are summarised (0: audit.FailureInterval). Tests shorten
	// them.
	AuditRotateBytes int64
	AuditInterval    time.Duration
}

// New prepares a server: it creates the data directories, opens the job
// store, re-queues jobs that were running when the server last stopped and
// removes leftovers of interrupted uploads. It does not listen yet.
func New(cfg *config.Server, log *slog.Logger, opts Options) (_ *Server, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct{ key, dir string }{
		{"RECON_SERVER_BASE_PFILE_DIR", cfg.InputBaseDir},
		{"RECON_JOB_OUTPUT_BASE_DIR", cfg.OutputBaseDir},
		{"RECON_SERVER_STATE_DIR", cfg.StateDir},
	} {
		if err := os.MkdirAll(d.dir, 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", d.key, err)
		}
	}
	if err := checkScript(cfg.ScriptPath); err != nil {
		return nil, err
	}
	// One server per data set. The lock goes with the process, also on a
	// crash.
	lock, err := statelock.AcquireDir(cfg.StateDir, "lock", "RECON_SERVER_STATE_DIR", "recon server")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	store, err := jobs.Open(filepath.Join(cfg.StateDir, "jobs.db"))
	if err != nil {
		return nil, fmt.Errorf("open job store: %w", err)
	}
	defer func() {
		if err != nil {
			store.Close()
		}
	}()
	s := &Server{
		cfg:      cfg,
		log:      log,
		version:  opts.Version,
		opts:     opts,
		store:    store,
		life:     daemon.New(log, "server"),
		started:  time.Now(),
		changed:  newNotifier(),
		uploads:  newReservations(),
		partials: &partials{m: map[string]*partial{}},
	}
	if s.ids, err = newIdentities(cfg); err != nil {
		return nil, err
	}
	if s.opts.HandshakeTimeout == 0 {
		s.opts.HandshakeTimeout = cfg.HandshakeTimeout // HANDSHAKE_TIMEOUT_SECONDS
	}
	if s.opts.HandshakeTimeout == 0 {
		s.opts.HandshakeTimeout = listen.HandshakeTimeout
	}
	if s.opts.IdleTimeout == 0 {
		s.opts.IdleTimeout = cfg.IdleTimeout // IDLE_TIMEOUT_SECONDS
	}
	if s.opts.IdleTimeout == 0 {
		s.opts.IdleTimeout = listen.IdleTimeout
	}
	if s.opts.KillGrace == 0 {
		s.opts.KillGrace = cfg.KillGrace // KILL_GRACE_SECONDS
	}
	// A message waits for room as long as a session may wait for a byte.
	s.msgs = protocol.NewBudget(protocol.MessageBudget, s.opts.IdleTimeout)
	s.clientMux, s.adminMux = s.clientRequests(), s.adminRequests()
	sampler := s.opts.Sampler
	if sampler == nil {
		sampler = NewSystemSampler(nil)
	}
	if s.caps, err = newSpaceCaps(cfg); err != nil {
		return nil, err
	}
	log.Info("disk space caps", "max_reserved_bytes_per_client", s.caps.reservedPerClient,
		"max_kept_upload_bytes_per_client", s.caps.keptPerClient, "max_kept_upload_bytes", s.caps.keptTotal)
	maxCPU, minMem := cfg.MaxCPULoadPercent, cfg.MinAvailableMemoryBytes
	if cfg.Executor == config.ExecutorSlurm { // the cluster decides (docs/SLURM.md)
		maxCPU, minMem = 100, 0
	}
	g := newGate(sampler, maxCPU, minMem, cfg.ResourceCheckInterval, log)
	exec := newExecutor(cfg, log, store, s.opts.KillGrace)
	s.metrics = newMetrics(s)
	s.pacs = s.newDeliverer()
	s.pool = newPool(poolDeps{cfg: cfg, log: log, store: store, exec: exec, changed: s.changed, durations: s.metrics.jobDuration, pacs: s.pacs},
		cfg.MaxConcurrentJobs, g)
	ctx := context.Background()
	requeued, failed, err := store.Recover(ctx, cfg.MaxJobAttempts)
	if err != nil {
		return nil, err // "recover jobs: ..." from the store
	}
	for _, id := range requeued {
		log.Info("job re-queued after restart", "job_id", id)
	}
	for _, id := range failed {
		log.Warn("job failed: too many attempts", "job_id", id)
		s.removeInput(id)
		s.removeOutput(ctx, id) // what the cut-short attempt wrote
	}
	// Before any job runs again: what its earlier attempt left must die.
	if err := exec.recover(ctx); err != nil {
		return nil, err
	}
	if err := s.sweepOrphans(ctx); err != nil {
		return nil, err
	}
	if err := s.openAudit(ctx); err != nil {
		return nil, err
	}
	s.life.Hold("state lock", lock)
	s.life.Hold("audit log", s.auditLog)
	s.life.Hold("job store", store) // closed first
	return s, nil
}

// Start listens on the client and admin addresses and starts the workers.
// It returns once both listeners are open. When it fails, Shutdown closes
// what it opened.
func (s *Server) Start() error {
	if s.life.Addr("client") != nil {
		return errors.New("server already started")
	}
	clientAddr := net.JoinHostPort(s.cfg.Hostname, fmt.Sprint(s.cfg.Port))
	cl, err := s.life.Listen("client", clientAddr)
	if err != nil {
		return fmt.Errorf("listen for clients on %s: %w", clientAddr, err)
	}
	adminAddr := net.JoinHostPort(s.cfg.AdminHostname, fmt.Sprint(s.cfg.AdminPort))
	al, err := s.life.Listen("admin", adminAddr)
	if err != nil {
		return fmt.Errorf("listen for admins on %s: %w", adminAddr, err)
	}
	var mln net.Listener
	var hs *http.Server
	if s.cfg.MetricsAddress != "" {
		if mln, hs, err = s.startMetrics(s.life.Context()); err != nil {
			return fmt.Errorf("METRICS_ADDRESS %s: %w", s.cfg.MetricsAddress, err)
		}
	}

	clientEP := &listen.Endpoint{
		Name: "client", Listener: cl, Allow: s.cfg.TrustedIPs, Handle: s.serveClient,
		Secure: secure.Config{Keys: s.ids.keyring, Role: secure.RoleClient, HandshakeTimeout: s.opts.HandshakeTimeout, IdleTimeout: s.opts.IdleTimeout},
		Failed: s.authFailures.Add,
	}
	adminEP := &listen.Endpoint{
		Name: "admin", Listener: al, Allow: s.cfg.TrustedIPs, Handle: s.serveAdmin,
		Secure: secure.Config{Key: s.cfg.AdminSharedKey, Role: secure.RoleAdmin, HandshakeTimeout: s.opts.HandshakeTimeout, IdleTimeout: s.opts.IdleTimeout},
		Failed: s.authFailures.Add,
	}
	loops := map[string]func(context.Context){
		"client listener": func(ctx context.Context) { listen.Serve(ctx, clientEP, s.log) },
		"admin listener":  func(ctx context.Context) { listen.Serve(ctx, adminEP, s.log) },
		"job pool":        s.pool.run,
		"upload expiry":   s.sweepPartials,
		"result expiry":   s.sweepResults,
		"audit summaries": s.runAuditSummaries,
	}
	if s.pacs.enabled() {
		loops["pacs delivery"] = s.pacs.run
	}
	if l, ok := s.pool.exec.(looper); ok {
		loops["executor"] = l.loop
	}
	if hs != nil {
		loops["metrics endpoint"] = func(ctx context.Context) { s.serveMetrics(ctx, hs, mln) }
	}
	for name, run := range loops {
		if err := s.life.Go(name, run); err != nil {
			return fmt.Errorf("start server: %w", err) // Shutdown began meanwhile: it ends what started
		}
	}

	s.log.Info("server started", "version", s.version, "client_addr", cl.Addr().String(), "admin_addr", al.Addr().String(),
		"workers", s.cfg.MaxConcurrentJobs)
	return nil
}

// Addr is the client listener's address (nil before Start).
func (s *Server) Addr() net.Addr { return s.life.Addr("client") }

// AdminAddr is the admin listener's address (nil before Start).
func (s *Server) AdminAddr() net.Addr { return s.life.Addr("admin") }

// MetricsAddr is the metrics endpoint's address (nil when metrics are off
// or before Start).
func (s *Server) MetricsAddr() net.Addr { return s.life.Addr("metrics") }

// Done is closed when Shutdown has begun and every goroutine started by
// Start has ended.
func (s *Server) Done() <-chan struct{} { return s.life.Done() }

// Shutdown stops accepting, ends every session, stops the workers (a
// running script is stopped and its job re-queued, so it runs again after
// the restart) and closes the store. It waits for all of that, or until ctx
// ends: then it returns ctx's error, and the store and the state lock are
// closed as soon as the last goroutine has ended. Safe to call more than
// once; a later call waits again.
func (s *Server) Shutdown(ctx context.Context) error { return s.life.Shutdown(ctx) }

// sweepOrphans removes what an interrupted server left behind: upload
// directories that never became a job, and input directories of jobs that
// have ended.
func (s *Server) sweepOrphans(ctx context.Context) error {
	live, err := s.liveJobs(ctx)
	if err != nil {
		return fmt.Errorf("sweep inputs: %w", err)
	}
	entries, err := os.ReadDir(s.cfg.InputBaseDir)
	if err != nil {
		return fmt.Errorf("read RECON_SERVER_BASE_PFILE_DIR: %w", err)
	}
	var incoming []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, incomingPrefix) {
			incoming = append(incoming, name)
			continue
		}
		if !jobs.ValidID(name) || live[name] {
			continue
		}
		j, err := s.store.Get(ctx, name)
		if errors.Is(err, jobs.ErrNotFound) || (err == nil && j.State.Terminal()) {
			os.RemoveAll(filepath.Join(s.cfg.InputBaseDir, name))
		} else if err != nil {
			return fmt.Errorf("sweep inputs: %w", err)
		}
	}
	s.loadPartials(incoming)
	// Results that were delivered (the server stopped between recording
	// the delivery and removing them), and results of jobs the store does
	// not know.
	entries, err = os.ReadDir(s.cfg.OutputBaseDir)
	if err != nil {
		return fmt.Errorf("read RECON_JOB_OUTPUT_BASE_DIR: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if id, ok := strings.CutPrefix(name, deliveredPrefix); ok {
			// Delivered; the server stopped while removing them.
			os.RemoveAll(filepath.Join(s.cfg.OutputBaseDir, name))
			if jobs.ValidID(id) {
				s.removeOutput(ctx, id)
			}
			continue
		}
		if !jobs.ValidID(name) || live[name] {
			continue
		}
		j, err := s.store.Get(ctx, name)
		switch {
		case errors.Is(err, jobs.ErrNotFound):
			s.log.Info("removing results of an unknown job", "job_id", name)
			os.RemoveAll(s.outputDir(name))
		case err != nil:
			return fmt.Errorf("sweep results: %w", err)
		case s.pacs.holds(ctx, name):
			// Kept for the PACS delivery, which removes them when it ends.
		case !j.DeliveredAt.IsZero() || !j.ResultsRemovedAt.IsZero():
			s.log.Info("removing delivered results", "job_id", name)
			s.removeOutput(ctx, name)
		}
	}
	return nil
}

// liveJobs returns the ids of the queued and running jobs, read in one
// query: the sweep skips their directories without asking the store about
// each (one Get per directory took 0.6 s of a restart with 10,000 queued
// jobs). Only New calls it, before anything else touches the store.
func (s *Server) liveJobs(ctx context.Context) (map[string]bool, error) {
	counts, err := s.store.Counts(ctx)
	if err != nil {
		return nil, err
	}
	n := counts[jobs.Queued] + counts[jobs.Running]
	list, err := s.store.List(ctx, jobs.ListOptions{Limit: n + 1})
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(list))
	for _, j := range list {
		if !j.State.Terminal() {
			live[j.ID] = true
		}
	}
	return live, nil
}

func (s *Server) inputDir(id string) string  { return filepath.Join(s.cfg.InputBaseDir, id) }
func (s *Server) outputDir(id string) string { return filepath.Join(s.cfg.OutputBaseDir, id) }

func (s *Server) removeInput(id string) { s.pool.removeInput(id) }

// notifier is a broadcast: Wait returns a channel closed at the next
// Broadcast or JobChanged. It also keeps the last few changes, so that a
// client waiting for one job can sleep through the changes of the others
// (see check): with many clients waiting, each change would otherwise cost
// every one of them two store queries.
type notifier struct {
	mu  sync.Mutex
	ch  chan struct{}
	gen uint64            // number of changes so far
	log [changeLog]change // the last changeLog changes, at gen % changeLog
}

// change is one broadcast: which job changed ("" for any), and whether a
// job left the queue, which moves the queued jobs behind it forward.
type change struct {
	id        string
	leftQueue bool
}

// changeLog is the number of changes a notifier remembers.
const changeLog = 64

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) Wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

// mark returns what Wait does and the number of changes so far.
func (n *notifier) mark() (<-chan struct{}, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch, n.gen
}

// Broadcast wakes every waiter for a change that may concern any job.
func (n *notifier) Broadcast() { n.broadcast(change{leftQueue: true}) }

// JobChanged wakes every waiter for a change of job id; leftQueue says
// that it left the queue (it was claimed or cancelled).
func (n *notifier) JobChanged(id string, leftQueue bool) {
	n.broadcast(change{id: id, leftQueue: leftQueue})
}

func (n *notifier) broadcast(c change) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.log[n.gen%changeLog] = c
	n.gen++
	close(n.ch)
	n.ch = make(chan struct{})
}

// check reports, of the changes after the first since ones, whether one
// may concern job id itself (a change of it, or of any job; also when more
// changes happened than the notifier remembers) and whether a job left the
// queue. It also returns, read at the same moment, what mark does.
func (n *notifier) check(since uint64, id string) (self, leftQueue bool, ch <-chan struct{}, gen uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	self = n.gen-since > changeLog
	for g := since; g < n.gen && !self; g++ {
		c := n.log[g%changeLog]
		self = c.id == "" || c.id == id
		leftQueue = leftQueue || c.leftQueue
	}
	return self, leftQueue, n.ch, n.gen
}
