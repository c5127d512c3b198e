package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/runner"
)

// localExecutor runs attempts on this machine: the script through package
// runner, which tracks every process an attempt starts (its marker, and a
// cgroup where it may) and kills them all before an attempt ends. Each
// attempt writes into a directory of its own (attempt.go), watched while
// the script runs (outwatch.go), which becomes the job's output once the
// attempt is over.
type localExecutor struct {
	cfg       *config.Server
	log       *slog.Logger
	killGrace time.Duration
	// instance names this server's runs in their processes' marker (see
	// instanceOf).
	instance string
	// env is what every script gets besides the job's variables
	// (scriptEnv).
	env []string
}

func newLocalExecutor(cfg *config.Server, log *slog.Logger, killGrace time.Duration) *localExecutor {
	return &localExecutor{cfg: cfg, log: log, killGrace: killGrace, instance: instanceOf(cfg.StateDir), env: scriptEnv(cfg, log)}
}

func (e *localExecutor) outputDir(id string) string { return filepath.Join(e.cfg.OutputBaseDir, id) }

func (e *localExecutor) run(ctx context.Context, a attempt) outcome {
	log := a.log
	// The script writes into a directory of this attempt's own, which
	// becomes the job's output once every process of the attempt is dead.
	out, work := e.outputDir(a.jobID), e.attemptDir(a.jobID, a.n)
	os.RemoveAll(out)
	if err := resetDir(work); err != nil {
		// The job's error reaches clients: the details, with server paths,
		// go to the log only.
		log.Error("cannot create the output directory", "err", err)
		return failure("the server could not create the job's output directory; see the server log", nil)
	}
	// The watcher stops the script through a context of its own: ctx's
	// cause stays the pool's.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	watched := e.watchOutput(runCtx, stop, work)
	res, err := runner.Run(runCtx, runner.Spec{
		Script:    e.cfg.ScriptPath,
		InputDir:  filepath.Join(e.cfg.InputBaseDir, a.jobID),
		OutputDir: work,
		JobID:     a.jobID,
		Instance:  e.instance,
		Attempt:   a.n,
		Options:   a.options,
		Env:       e.env,
		Timeout:   e.cfg.JobTimeout,
		KillGrace: e.killGrace,
		// The runner adds job_id to its records itself: given log, each
		// would carry it twice.
		Logger: e.log.With("worker", a.worker, "identity", a.identity),
	})
	over := watched()
	if err != nil {
		os.RemoveAll(work)
	}
	switch {
	case errors.Is(err, runner.ErrSurvivors):
		// Logged by the runner. The output could still change.
		return failure("processes the script started could not be stopped; see the server log", nil)
	case err != nil:
		log.Error("could not start the reconstruction script", "err", err)
		os.RemoveAll(out)
		return failure(startFailure(err), nil)
	case over != nil:
		// Removed before the job's end is recorded: the store may need
		// the space.
		os.RemoveAll(work)
		return failure(over.msg, &res.ExitCode)
	case ctx.Err() != nil:
		os.RemoveAll(work)
		return outcome{end: stopped}
	}
	if err := e.promoteAttempt(a.jobID, work); err != nil {
		log.Error("cannot keep the job's output", "err", err)
		os.RemoveAll(work)
		return failure("the server could not keep the job's output; see the server log", nil)
	}
	return outcome{end: exited, exit: &res.ExitCode, signal: res.Signal, timedOut: res.TimedOut, stderrTail: res.StderrTail}
}

// resetDir makes dir an empty directory (a retried job starts clean).
func resetDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o700)
}
