package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/runner"
)

// errCancelled is the cause given to a job's context when an admin cancels
// it.
var errCancelled = errors.New("cancelled by an administrator")

// runJob runs one claimed job to its end, or re-queues it if the server is
// shutting down.
func (s *Server) runJob(ctx context.Context, j *jobs.Job, worker int) {
	log := s.log.With("job_id", j.ID, "worker", worker)
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.mu.Lock()
	s.running[j.ID] = cancel
	if s.cancelReq[j.ID] {
		cancel(errCancelled)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, j.ID)
		delete(s.cancelReq, j.ID)
		s.mu.Unlock()
	}()
	s.changed.JobChanged(j.ID, true) // claimed: it left the queue
	log.Info("job started", "attempt", j.Attempts)

	// Store writes must land even when the server is stopping.
	bg := context.WithoutCancel(ctx)
	// The script writes into a directory of this attempt's own, which
	// becomes the job's output once every process of the attempt is dead.
	out, work := s.outputDir(j.ID), s.attemptDir(j.ID, j.Attempts)
	os.RemoveAll(out)
	if err := resetDir(work); err != nil {
		// The job's error reaches clients: the details, with server paths,
		// go to the log only.
		log.Error("cannot create the output directory", "err", err)
		s.finish(bg, log, j.ID, jobs.Failed, nil, "the server could not create the job's output directory; see the server log", nil)
		return
	}
	watched := s.watchOutput(jobCtx, cancel, work)
	res, err := runner.Run(jobCtx, runner.Spec{
		Script:    s.cfg.ScriptPath,
		InputDir:  s.inputDir(j.ID),
		OutputDir: work,
		JobID:     j.ID,
		Instance:  s.instance,
		Attempt:   j.Attempts,
		Options:   j.Options,
		Timeout:   s.cfg.JobTimeout,
		KillGrace: s.opts.KillGrace,
		// The runner adds job_id to its records itself: given log, each
		// would carry it twice.
		Logger: s.log.With("worker", worker),
	})
	over := watched()
	if err != nil {
		os.RemoveAll(work)
	}
	switch {
	case errors.Is(err, runner.ErrSurvivors):
		// Logged by the runner. The output could still change.
		s.finish(bg, log, j.ID, jobs.Failed, nil, "processes the script started could not be stopped; see the server log", nil)
		return
	case err != nil:
		log.Error("could not start the reconstruction script", "err", err)
		os.RemoveAll(out)
		s.finish(bg, log, j.ID, jobs.Failed, nil, "the server could not start the reconstruction script; see the server log", nil)
		return
	case errors.Is(context.Cause(jobCtx), errCancelled):
		os.RemoveAll(work)
		s.finish(bg, log, j.ID, jobs.Cancelled, nil, "cancelled by an administrator", nil)
		return
	case over != nil:
		// Removed before the job's end is recorded: the store may need
		// the space.
		os.RemoveAll(work)
		s.finish(bg, log, j.ID, jobs.Failed, &res.ExitCode, over.msg, nil)
		return
	case ctx.Err() != nil:
		// Shutting down: the job runs again after the restart.
		if err := s.store.Requeue(bg, j.ID, "the server stopped while the job was running"); err != nil {
			log.Error("re-queue job at shutdown", "err", err)
		} else {
			log.Info("job re-queued: server stopping")
		}
		os.RemoveAll(work)
		return
	}
	if err := s.promoteAttempt(j.ID, work); err != nil {
		log.Error("cannot keep the job's output", "err", err)
		os.RemoveAll(work)
		s.finish(bg, log, j.ID, jobs.Failed, nil, "the server could not keep the job's output; see the server log", nil)
		return
	}
	exit := res.ExitCode
	// Names a client would refuse (reserved device names, ':', ...) are
	// skipped here: listed, they would make every fetch of the job fail.
	results, skipped, cerr := runner.CollectResults(out, runner.Limits{
		MaxFiles:  s.cfg.MaxResultFiles,
		MaxBytes:  s.cfg.MaxResultBytes,
		ValidName: protocol.ValidateResultName,
	})
	results, clashes := dropFoldedClashes(results)
	skipped = append(skipped, clashes...)
	for _, sk := range skipped {
		log.Warn("result not returned", "file", sk.Name, "reason", sk.Reason)
	}
	var files []jobs.File
	for _, r := range results {
		files = append(files, jobs.File(r))
	}
	// The manifest travels in one message: a list too long for it would
	// make the job impossible to describe or fetch.
	if size := protocol.FileListSize(wireFiles(files)); cerr == nil && size > protocol.MaxFileListBytes {
		cerr = fmt.Errorf("the list of %d result files takes %d bytes, at most %d: write fewer files, or shorter names: %w",
			len(files), size, protocol.MaxFileListBytes, runner.ErrLimit)
	}
	state, msg := jobs.Succeeded, ""
	switch {
	case res.TimedOut:
		state, msg = jobs.Failed, fmt.Sprintf("the script timed out after %s (JOB_TIMEOUT_SECONDS)", s.cfg.JobTimeout)
	case exit != 0:
		state = jobs.Failed
		if exit < 0 {
			msg = "the script was killed by a signal"
		} else {
			msg = fmt.Sprintf("the script exited with status %d", exit)
		}
		if tail := strings.TrimSpace(res.StderrTail); tail != "" {
			msg += ": " + tail
		}
	case cerr != nil:
		state, msg, files = jobs.Failed, "collecting results: "+cerr.Error(), nil
	}
	if cerr != nil {
		files = nil
		os.RemoveAll(out)
	}
	if state == jobs.Failed {
		files = s.failedOutputs(log, out, files)
	}
	s.finish(bg, log, j.ID, state, &exit, msg, files)
}

func (s *Server) finish(ctx context.Context, log *slog.Logger, id string, state jobs.State, exit *int, msg string, results []jobs.File) {
	if err := s.store.Finish(ctx, id, state, exit, msg, results); err != nil {
		log.Error("record job end", "err", err)
		return
	}
	if j, err := s.store.Get(ctx, id); err == nil && !j.StartedAt.IsZero() {
		s.metrics.jobDuration.WithLabelValues(string(state)).Observe(j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	s.removeInput(id)
	// A job that left no output dir has no results to fetch: record that
	// before anyone hears that the job ended, so a fetch gets "gone".
	if _, err := os.Lstat(s.outputDir(id)); errors.Is(err, os.ErrNotExist) {
		if err := s.store.MarkResultsRemoved(ctx, id); err != nil {
			log.Warn("record results removed", "err", err)
		}
	}
	log.Info("job ended", "state", string(state), "error", msg, "results", len(results))
	s.changed.JobChanged(id, false)
}

// resetDir makes dir an empty directory (a retried job starts clean).
func resetDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o700)
}

// CancelJob cancels a job: a queued one at once, a running one by stopping
// its script.
func (s *Server) CancelJob(ctx context.Context, id string) (prev jobs.State, err error) {
	prev, err = s.store.Cancel(ctx, id)
	if err != nil {
		return prev, err
	}
	switch prev {
	case jobs.Queued:
		s.removeInput(id)
		s.changed.JobChanged(id, true)
	case jobs.Running:
		s.mu.Lock()
		if cancel := s.running[id]; cancel != nil {
			cancel(errCancelled)
		} else {
			// Claimed but not started yet: runJob cancels it as it starts.
			s.cancelReq[id] = true
		}
		s.mu.Unlock()
	}
	return prev, nil
}

// dropFoldedClashes leaves out the results a client on a case-insensitive
// or normalising file system (Windows, macOS) could not write beside the
// others: a name equal to an earlier one after protocol.FoldName, or a
// file whose name is, so folded, a folder of another result (or the other
// way round). The first in name order is kept. Listed, such a result would
// make every fetch of the job fail there.
func dropFoldedClashes(results []runner.ResultFile) ([]runner.ResultFile, []runner.Skipped) {
	files := make(map[string]string, len(results)) // folded name → name
	dirs := make(map[string]string)                // folded folder → a file under it
	kept := results[:0:0]
	var skipped []runner.Skipped
	for _, r := range results {
		key := protocol.FoldName(r.Name)
		clash, ok := files[key]
		if !ok {
			clash, ok = dirs[key]
		}
		for i := 0; !ok && i < len(key); i++ {
			if key[i] == '/' {
				clash, ok = files[key[:i]]
			}
		}
		if ok {
			skipped = append(skipped, runner.Skipped{Name: r.Name,
				Reason: fmt.Sprintf("clashes with result %q on a case-insensitive file system", clash)})
			continue
		}
		files[key] = r.Name
		for i := 0; i < len(key); i++ {
			if key[i] == '/' {
				dirs[key[:i]] = r.Name
			}
		}
		kept = append(kept, r)
	}
	return kept, skipped
}
