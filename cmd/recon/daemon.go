package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/daemon"
	"github.com/recon-mri/recon/internal/watch"
)

// shutdownTimeout bounds a clean stop after SIGINT/SIGTERM.
const shutdownTimeout = 30 * time.Second

// daemonCmd completes the command of a daemon: no arguments, and a config
// file in --opts (default defOpts, described by optsUsage) given to run.
func daemonCmd(e *env, cmd *cobra.Command, defOpts, optsUsage string, run func(ctx context.Context, e *env, optsPath string) error) *cobra.Command {
	var opts string
	cmd.Args = argsRange(0, 0)
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), e, opts) }
	cmd.Flags().StringVar(&opts, "opts", defOpts, optsUsage)
	return cmd
}

// service is what a long-running command runs: a server, a relay, or a
// watch (watchService).
type service interface {
	Start() error
	// Done is closed when the service has stopped by itself.
	Done() <-chan struct{}
	Shutdown(ctx context.Context) error
}

// daemonSpec says how runDaemon runs one service.
type daemonSpec[S service] struct {
	name     string // "server", "relay", "watch": in what the command prints
	logKey   string // the config key of logFile, in errors
	logFile  string // "": log to standard error
	logLevel slog.Level
	open     func(log *slog.Logger) (S, error) // builds the service, not started yet
	started  func(s S, logName string)         // prints where it listens
	warnings []config.Warning                  // of its config file, also written into the log
	hangup   func(s S)                         // runs at SIGHUP, after the log is reopened; may be nil
}

// runDaemon runs a service until ctx ends (SIGINT or SIGTERM) or the
// service stops by itself, then shuts it down within shutdownTimeout. It
// opens the log first; SIGHUP reopens the log file, and must not end the
// process, also before the log is open.
func runDaemon[S service](ctx context.Context, e *env, spec daemonSpec[S]) error {
	hup, stopHup := notifyHangup()
	defer stopHup()
	log, err := openDaemonLog(spec.logKey, spec.logFile, spec.logLevel, e.stderr)
	if err != nil {
		return err
	}
	defer log.Close()
	logConfigWarnings(log.Logger, spec.warnings)
	s, err := spec.open(log.Logger)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		s.Shutdown(context.Background())
		return err
	}
	spec.started(s, log.name)
	var onHup func()
	if spec.hangup != nil {
		onHup = func() { spec.hangup(s) }
	}
	if log.waitStop(ctx, s.Done(), hup, e.stderr, onHup) {
		fmt.Fprintf(e.stderr, "recon %s: stopping\n", spec.name)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "recon %s: stopped\n", spec.name)
	return nil
}

// watchService runs a watch.Watcher as a service: Run in a goroutine of
// its own lifecycle, and the state closed once Run has returned.
type watchService struct {
	w      *watch.Watcher
	life   *daemon.Lifecycle
	runErr error // what Run returned; read once life.Done() is closed
}

func newWatchService(w *watch.Watcher) *watchService {
	// No log: Run logs "watch stopped" itself.
	s := &watchService{w: w, life: daemon.New(nil, "watch")}
	s.life.Hold("state", w)
	return s
}

func (s *watchService) Start() error {
	return s.life.Go("watch", func(ctx context.Context) {
		s.runErr = s.w.Run(ctx)
		s.life.Stop() // also when Run ended by itself: the state cannot be written
	})
}

func (s *watchService) Done() <-chan struct{} { return s.life.Done() }

// Shutdown returns what Run returned, or else what closing the state did.
func (s *watchService) Shutdown(ctx context.Context) error {
	err := s.life.Shutdown(ctx)
	select {
	case <-s.life.Done():
		if s.runErr != nil {
			return s.runErr
		}
	default:
	}
	return err
}
