// Package watch is the directory-watching client daemon behind `recon
// watch`: it finds raw-data files as a scanner writes them into a
// directory, waits until each is complete, gathers the files that arrive
// together into a group, submits each group as one job, waits for it and
// downloads its results.
//
// Three goroutines share a durable state (an SQLite database):
//
//   - the detector scans the directory every poll interval (the source of
//     truth) and reacts to fsnotify events in between. A file whose size
//     and modification time have not changed for the stability delay, and
//     which can be opened, is ready; ready files join the open group, which
//     is recorded as pending once the grouping timeout passes without a new
//     one.
//   - the submitter hashes a pending group's files, derives its submission
//     id from them (path, size, mtime, SHA-256) and submits it; the server
//     answers a repeated submission id with the job it already has, so a
//     crash between submitting and recording makes no second job.
//   - the collector waits for each submitted job and downloads its results
//     into DownloadDir/<group>/ with a summary file.
//
// While the server cannot be reached, the submitter and the collector retry
// with capped exponential backoff and the detector carries on. Files in the
// watched directory are only ever read.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/protocol"
)

// Limits and timings that are not configurable.
const (
	// MaxGroupFiles closes a group when it reaches this many files (the
	// server's default MAX_FILES_PER_JOB).
	MaxGroupFiles = 1000
	// DefaultRetryMin and DefaultRetryMax bound the backoff between
	// attempts to reach the server.
	DefaultRetryMin = time.Second
	DefaultRetryMax = time.Minute
	// waitSilence ends a wait for a job when the server has sent nothing
	// for this long (it re-sends the job's state every 30 s), so a server
	// that vanished without closing the connection is noticed.
	waitSilence = 100 * time.Second
	// transferStall ends an upload or download that has moved no byte for
	// this long.
	transferStall = 5 * time.Minute
	// submitReconnects is how many times one submission resumes its upload
	// on a new session, waiting RetryMin, then twice as long, and so on,
	// before it gives up and the submitter's own backoff takes over (the
	// next submission resumes the upload too: the submission id is the
	// same). Each reconnect is logged; three keep the silence short.
	submitReconnects = 3
	// hashBufferSize is the read buffer for hashing input files.
	hashBufferSize = 1 << 20
	// SummaryName is the summary file written into each group's download
	// directory.
	SummaryName = "recon-summary.json"
)

// Config is what a Watcher needs. Paths should be absolute; relative ones
// are taken from the working directory.
type Config struct {
	Dir             string            // the watched directory (CLIENT_WATCH_DIRECTORY)
	Pattern         string            // file name pattern (CLIENT_WATCH_PATTERN)
	PollInterval    time.Duration     // between full scans (CLIENT_DAEMON_POLL_INTERVAL)
	StabilityDelay  time.Duration     // CLIENT_DAEMON_STABILITY_DELAY
	GroupingTimeout time.Duration     // CLIENT_DAEMON_GROUPING_TIMEOUT
	Options         map[string]string // job options (CLIENT_DAEMON_RECON_OPTIONS_JSON)
	DownloadDir     string            // results go to DownloadDir/<group>/ (CLIENT_DOWNLOAD_DIR)
	StateDir        string            // CLIENT_DAEMON_STATE_DIR
	MaxAttempts     int               // submissions of a group whose job fails; 0 means 1
	LogFile         string            // the log file, only to keep it out of Dir; may be ""

	// DICOMRef makes a DICOM file in a group the group's reference
	// (CLIENT_WATCH_DICOM_REF): files named *.dcm join groups too, and
	// the identity of the group's first DICOM file (by path) is added to
	// Options (an option of the same key in Options wins); DICOM files
	// are not uploaded (withDICOMRef).
	DICOMRef bool

	Server client.Config // where the server is, and its key
	Log    *slog.Logger  // nil discards

	// RetryMin and RetryMax bound the backoff while the server cannot be
	// reached; zero means DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

// ConfigFrom makes a Config from a loaded client configuration.
func ConfigFrom(c *config.Client, log *slog.Logger) Config {
	return Config{
		Dir:             c.WatchDir,
		Pattern:         c.WatchPattern,
		PollInterval:    c.PollInterval,
		StabilityDelay:  c.StabilityDelay,
		GroupingTimeout: c.GroupingTimeout,
		Options:         c.ReconOptions,
		DICOMRef:        c.WatchDICOMRef,
		DownloadDir:     c.DownloadDir,
		StateDir:        c.WatchStateDir,
		MaxAttempts:     c.WatchAttempts,
		LogFile:         c.WatchLogFile,
		Server:          client.Config{Address: c.Addr(), Key: c.SharedKey.Encode()},
		Log:             log,
	}
}

// Watcher is the daemon. Create it with New, start it with Run (once), and
// Close it after Run has returned.
type Watcher struct {
	cfg      Config
	log      *slog.Logger
	state    *state
	patterns []string // of cfg.Pattern

	submitKick  chan struct{}
	collectKick chan struct{}
	ran         atomic.Bool

	// hooks let tests stop the daemon at chosen points as a crash would.
	hooks hooks
}

// hooks are called, when set, at points where a crash is interesting; a
// hook that returns true makes the daemon stop there at once, without
// recording anything more (a transfer in progress is cut). The other
// fields let tests observe the detector and change what it relies on.
type hooks struct {
	afterSubmit func(g *Group) bool // the server has the job; not yet recorded
	beforeFetch func(g *Group) bool // the job has ended; nothing downloaded
	afterFetch  func(g *Group) bool // results downloaded and acknowledged; not yet recorded
	// uploading and downloading are called with the progress of a
	// group's upload and of the download of its results.
	uploading   func(g *Group, done, total int64) bool
	downloading func(g *Group, done, total int64) bool

	noNotify  bool                                // no fsnotify: scans only
	detecting func()                              // the detector watches and has scanned once
	openFile  func(path string) (*os.File, error) // replaces the open of "can be opened for reading"
}

// errCrash is returned by Run when a hook stopped it.
var errCrash = errors.New("watch: stopped by a test hook")

// New checks the configuration and opens (or creates) the state. It fails
// when another daemon uses the same state directory.
func New(cfg Config) (*Watcher, error) {
	if cfg.Dir == "" {
		return nil, errors.New("CLIENT_WATCH_DIRECTORY is not set: recon watch needs the directory to watch")
	}
	if cfg.Pattern == "" {
		cfg.Pattern = "*.7"
	}
	patterns, err := parsePatterns(cfg.Pattern)
	if err != nil {
		return nil, err
	}
	if err := checkDir(cfg.Dir); err != nil {
		return nil, err
	}
	if cfg.PollInterval <= 0 {
		return nil, errors.New("the poll interval must be positive")
	}
	if cfg.StabilityDelay < 0 || cfg.GroupingTimeout < 0 {
		return nil, errors.New("the stability delay and grouping timeout must not be negative")
	}
	if err := protocol.ValidateOptions(cfg.Options); err != nil {
		return nil, fmt.Errorf("CLIENT_DAEMON_RECON_OPTIONS_JSON: %w", err)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 1
	}
	if cfg.Server.Hashes == nil {
		// The daemon hashes each file with SHA-256 before it submits it
		// (for its state and its submission ids) and checks the server's
		// SHA-256 against that afterwards: its sessions check SHA-256.
		cfg.Server.Hashes = []string{protocol.HashSHA256}
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, p := range []*string{&cfg.Dir, &cfg.DownloadDir, &cfg.StateDir, &cfg.LogFile} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	if cfg.DownloadDir == "" || cfg.StateDir == "" {
		return nil, errors.New("the download and state directories must be set")
	}
	// Nothing of the daemon's may land in the scanner's directory.
	for _, d := range []struct{ name, path string }{
		{"CLIENT_DOWNLOAD_DIR", cfg.DownloadDir},
		{"CLIENT_DAEMON_STATE_DIR", cfg.StateDir},
		{"CLIENT_DAEMON_LOG_FILEPATH", cfg.LogFile},
	} {
		if d.path != "" && within(d.path, cfg.Dir) {
			return nil, fmt.Errorf("%s (%s) must be outside CLIENT_WATCH_DIRECTORY (%s)", d.name, d.path, cfg.Dir)
		}
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Watcher{
		cfg:         cfg,
		log:         cfg.Log,
		state:       st,
		patterns:    patterns,
		submitKick:  make(chan struct{}, 1),
		collectKick: make(chan struct{}, 1),
	}, nil
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(rel) || p == dir
}

// Close closes the state. Call it after Run has returned.
func (w *Watcher) Close() error { return w.state.close() }

// Groups returns every group the state holds, oldest first, with their
// files.
func (w *Watcher) Groups(ctx context.Context) ([]Group, error) { return w.state.groups(ctx, true) }

// Run runs the daemon until ctx ends, then stops its goroutines and
// returns nil; every change of state is committed as it happens, so there
// is nothing left to save. It returns an error when the state cannot be
// written, and at once when the server keeps refusing the handshake at
// start (see checkServer). Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.ran.CompareAndSwap(false, true) {
		return errors.New("watch: Run called twice")
	}
	w.log.Info("watch started", "dir", w.cfg.Dir, "pattern", w.cfg.Pattern, "server", w.cfg.Server.Address,
		"download_dir", w.cfg.DownloadDir, "state_dir", w.cfg.StateDir,
		"poll_seconds", w.cfg.PollInterval.Seconds(), "stability_seconds", w.cfg.StabilityDelay.Seconds(),
		"grouping_seconds", w.cfg.GroupingTimeout.Seconds(), "max_attempts", w.cfg.MaxAttempts)
	if err := w.checkServer(ctx); err != nil {
		w.log.Error("watch stopped", "err", err)
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, loop := range []func(context.Context) error{w.detect, w.submitLoop, w.collectLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(ctx); err != nil {
				errOnce.Do(func() { firstErr = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil && !errors.Is(firstErr, errCrash) {
		w.log.Error("watch stopped", "err", firstErr)
	} else {
		w.log.Info("watch stopped")
	}
	return firstErr
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
