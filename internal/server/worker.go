package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/runner"
)

// errCancelled is the cause given to a job's context when an admin cancels
// it.
var errCancelled = errors.New("cancelled by an administrator")

// runJob runs one claimed job to its end through the executor, or
// re-queues it if the server is shutting down.
func (p *pool) runJob(ctx context.Context, j *jobs.Job, worker int) {
	log := p.log.With("job_id", j.ID, "identity", j.Identity, "worker", worker)
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.mu.Lock()
	p.running[j.ID] = cancel
	if p.cancelReq[j.ID] {
		cancel(errCancelled)
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.running, j.ID)
		delete(p.cancelReq, j.ID)
		p.mu.Unlock()
	}()
	p.changed.JobChanged(j.ID, true) // claimed: it left the queue
	log.Info("job started", "attempt", j.Attempts)

	o := p.exec.run(jobCtx, attempt{jobID: j.ID, n: j.Attempts, options: j.Options, worker: worker, log: log, identity: j.Identity})
	// Store writes must land even when the server is stopping.
	bg := context.WithoutCancel(ctx)
	switch {
	case o.end == failed:
		p.finish(bg, log, j.ID, jobs.Failed, o.exit, o.msg, nil)
		return
	case o.end == stopped && errors.Is(context.Cause(jobCtx), errCancelled):
		p.finish(bg, log, j.ID, jobs.Cancelled, nil, "cancelled by an administrator", nil)
		return
	case o.end == stopped:
		// Shutting down: the job runs again after the restart.
		if err := p.store.Requeue(bg, j.ID, "the server stopped while the job was running"); err != nil {
			log.Error("re-queue job at shutdown", "err", err)
		} else {
			log.Info("job re-queued: server stopping")
		}
		return
	}
	out := p.outputDir(j.ID)
	exit := *o.exit
	// Names a client would refuse (reserved device names, ':', ...) are
	// skipped here: listed, they would make every fetch of the job fail.
	results, skipped, cerr := runner.CollectResults(out, runner.Limits{
		MaxFiles:  p.cfg.MaxResultFiles,
		MaxBytes:  p.cfg.MaxResultBytes,
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
	if size := protocol.FileListSize(manifestFiles(files, true)); cerr == nil && size > protocol.MaxFileListBytes {
		cerr = fmt.Errorf("the list of %d result files takes %d bytes, at most %d: write fewer files, or shorter names: %w",
			len(files), size, protocol.MaxFileListBytes, runner.ErrLimit)
	}
	state, msg := jobs.Succeeded, ""
	switch {
	case o.timedOut:
		state, msg = jobs.Failed, fmt.Sprintf("the script timed out after %s (JOB_TIMEOUT_SECONDS)", p.cfg.JobTimeout)
	case exit != 0:
		state = jobs.Failed
		if exit < 0 {
			msg = "the script was killed by a signal"
		} else {
			msg = fmt.Sprintf("the script exited with status %d", exit)
		}
		if tail := strings.TrimSpace(o.stderrTail); tail != "" {
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
		files = p.failedOutputs(log, out, files)
	}
	p.finish(bg, log, j.ID, state, &exit, msg, files)
}

func (p *pool) finish(ctx context.Context, log *slog.Logger, id string, state jobs.State, exit *int, msg string, results []jobs.File) {
	if err := p.store.Finish(ctx, id, state, exit, msg, results); err != nil {
		log.Error("record job end", "err", err)
		return
	}
	if j, err := p.store.Get(ctx, id); err == nil && !j.StartedAt.IsZero() {
		p.durations.WithLabelValues(string(state)).Observe(j.FinishedAt.Sub(j.StartedAt).Seconds())
	}
	p.removeInput(id)
	if state == jobs.Succeeded && p.pacs.enabled() {
		p.pacs.enqueue(ctx, id) // before anyone hears that the job ended
	}
	// A job that left no output dir has no results to fetch: record that
	// before anyone hears that the job ended, so a fetch gets "gone".
	if _, err := os.Lstat(p.outputDir(id)); errors.Is(err, os.ErrNotExist) {
		if err := p.store.MarkResultsRemoved(ctx, id); err != nil {
			log.Warn("record results removed", "err", err)
		}
	}
	log.Info("job ended", "state", string(state), "error", msg, "results", len(results))
	p.changed.JobChanged(id, false)
}

// cancelJob cancels a job: a queued one at once, a running one by stopping
// its attempt (the executor ends it when its context is done).
func (p *pool) cancelJob(ctx context.Context, id string) (prev jobs.State, err error) {
	prev, err = p.store.Cancel(ctx, id)
	if err != nil {
		return prev, err
	}
	switch prev {
	case jobs.Queued:
		if r, ok := p.exec.(releaser); ok {
			r.release(ctx, id)
		}
		p.removeInput(id)
		p.changed.JobChanged(id, true)
	case jobs.Running:
		p.mu.Lock()
		if cancel := p.running[id]; cancel != nil {
			cancel(errCancelled)
		} else {
			// Claimed but not started yet: runJob cancels it as it starts.
			p.cancelReq[id] = true
		}
		p.mu.Unlock()
	}
	return prev, nil
}

func (p *pool) outputDir(id string) string { return filepath.Join(p.cfg.OutputBaseDir, id) }

func (p *pool) removeInput(id string) {
	if err := os.RemoveAll(filepath.Join(p.cfg.InputBaseDir, id)); err != nil {
		p.log.Warn("remove input dir", "job_id", id, "err", err)
	}
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
