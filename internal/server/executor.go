package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
)

// An executor runs the attempts of jobs for the pool: the seam between
// deciding which job runs (the pool, with the store and the resource gate)
// and running it somewhere. Today the only executor is the local one
// (local.go), which runs the script on this machine with package runner;
// one that hands attempts to a batch system plugs in here.
//
// What an executor promises:
//
//   - recover is called once, by New, before any attempt runs. It ends
//     whatever attempts of an earlier run of the server (one that crashed,
//     or was killed) left running, and removes what they were writing: the
//     store has re-queued or failed their jobs already. A leftover it
//     cannot end is logged; an error stops the server from starting.
//   - run runs one attempt and returns only when nothing of it runs or
//     writes any more. The job's output is then either the attempt's whole
//     output, in the job's output directory (RECON_JOB_OUTPUT_BASE_DIR/<job
//     id>), or gone: a later attempt of the same job never shares a
//     directory with an earlier one.
//   - run ends the attempt when ctx is done (an administrator's cancel, or
//     the server stopping: the pool tells which by ctx's cause) and reports
//     it as stopped, its output removed.
//     An executor whose attempts run outside the server (slurm.go) may
//     leave an attempt running when the server stops, provided the next
//     run of the server attaches to it instead of starting another.
//   - run reports how the attempt ended: exited (an exit status, or the
//     signal that ended it, or its time limit, JOB_TIMEOUT_SECONDS), or
//     failed, with a message for the client, when the executor could not
//     start it, could not keep its output, or stopped it itself (for
//     MAX_RESULT_BYTES or a full disk). Details with server paths go to the
//     log only, never into the message.
//
// Collecting the results from the output directory, recording the end in
// the store and the fate of a failed job's output (KEEP_FAILED_OUTPUTS)
// are the pool's, the same for every executor.
type executor interface {
	recover(ctx context.Context) error
	run(ctx context.Context, a attempt) outcome
}

// newExecutor is the executor EXECUTOR names: local (local.go) or slurm
// (slurm.go).
func newExecutor(cfg *config.Server, log *slog.Logger, store *jobs.Store, killGrace time.Duration) executor {
	if cfg.Executor == config.ExecutorSlurm {
		return newSlurmExecutor(cfg, log, store, killGrace)
	}
	return newLocalExecutor(cfg, log, killGrace)
}

// Optional parts of an executor, which the pool and the server use when an
// executor has them.
type (
	// holder keeps the pool's workers from taking jobs (with a reason)
	// until the executor is ready (the Slurm executor's probe job); ready
	// is closed then.
	holder interface {
		held() (held bool, why string, ready <-chan struct{})
	}
	// looper has a goroutine of its own, run by the server's lifecycle.
	looper interface{ loop(ctx context.Context) }
	// placer tells where an attempt runs outside the server: its Slurm
	// job id, state and the reason Slurm gives.
	placer interface {
		where(jobID string) (ref, state, reason string, ok bool)
	}
	// releaser ends what an executor still holds of a queued job that is
	// cancelled: an attempt left running by an earlier run of the server,
	// which the job would have attached to.
	releaser interface {
		release(ctx context.Context, jobID string)
	}
)

// attempt is one run of a job, as the pool hands it to an executor.
type attempt struct {
	jobID   string
	n       int // the attempt's number: 1 for the first run of the job
	options map[string]string
	worker  int          // the pool's worker that waits for it
	log     *slog.Logger // with job_id, identity and worker
	// identity owns the job, for the records of the script's output.
	identity string
}

// ending is how an attempt ended.
type ending int

const (
	// exited: the script ended by itself or at its time limit; the output
	// directory holds its output.
	exited ending = iota
	// stopped: ctx ended the attempt; nothing of it is kept.
	stopped
	// failed: the executor could not run the attempt or keep its output,
	// or stopped it for its output; outcome.msg says why.
	failed
)

// outcome is what an executor reports of an attempt.
type outcome struct {
	end ending
	// exit is the script's exit status, -1 when a signal ended it; nil
	// when the script did not run to its end.
	exit *int
	// signal names the signal that ended the script, "" if none.
	signal string
	// timedOut: the executor ended the script at JOB_TIMEOUT_SECONDS.
	timedOut bool
	// stderrTail is the end of the script's standard error, for the
	// job's error message.
	stderrTail string
	// msg is the job's error when the attempt failed, safe for clients.
	msg string
}

// failure is the outcome of a failed attempt.
func failure(msg string, exit *int) outcome { return outcome{end: failed, msg: msg, exit: exit} }
