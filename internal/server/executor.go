package server

import (
	"context"
	"log/slog"
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
