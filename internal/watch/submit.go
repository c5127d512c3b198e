package watch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
)

// SubmissionID derives a group's submission id from its files' paths,
// sizes, modification times and SHA-256 sums, the options it is submitted
// with (and the attempt, after the first), so that submitting the same
// group again names the same job, and a group submitted with other options
// (the config changed) another one, which the server would otherwise
// refuse as a conflict. It is client.DeriveSubmissionID with the prefix
// "watch": without options, the ids are those of earlier versions.
func SubmissionID(files []File, attempt int, options map[string]string) string {
	fs := make([]client.SubmissionFile, 0, len(files))
	for _, f := range files {
		fs = append(fs, client.SubmissionFile{Path: f.Path, Size: f.Size, ModTime: f.ModTime, SHA256: f.SHA256})
	}
	id := client.DeriveSubmissionID("watch", fs, options)
	if attempt > 1 {
		id += fmt.Sprintf("-a%d", attempt)
	}
	return id
}

// retryable marks an error after which the same step is tried again
// later: the server cannot be reached, or asks to come back. group, when
// set, names the group the step was working on, for the log.
type retryable struct {
	err   error
	group string
}

// forGroup names the group in a retryable error; other errors are
// returned as they are.
func forGroup(err error, group string) error {
	var re *retryable
	if errors.As(err, &re) {
		return &retryable{err: re.err, group: group}
	}
	return err
}

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// serverError classifies an error of a request: a server error with one of
// the codes in permanent is returned as is, anything else (network errors,
// a full queue or disk, a backend away) is retryable.
func serverError(err error, permanent ...protocol.Code) error {
	var pe *protocol.Error
	if errors.As(err, &pe) && slices.Contains(permanent, pe.Code) {
		return err
	}
	return &retryable{err: err}
}

// backoff is a capped exponential delay with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	// Between half and all of the current step, so that many daemons do
	// not come back in step.
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// conn is a lazily dialled client that is dropped after any error.
type conn struct {
	w *Watcher
	c *client.Client
}

func (c *conn) get(ctx context.Context) (*client.Client, error) {
	if c.c != nil {
		return c.c, nil
	}
	cl, err := client.Dial(ctx, c.w.cfg.Server)
	if err != nil {
		return nil, &retryable{err: err}
	}
	c.c = cl
	return cl, nil
}

func (c *conn) drop() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// watchdog cancels a request that has shown no sign of life for d; kick
// is a sign of life.
func watchdog(ctx context.Context, d time.Duration) (context.Context, func(), func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(d, func() { cancel(errStalled) })
	return ctx, func() { t.Reset(d) }, func() { t.Stop(); cancel(nil) }
}

var errStalled = errors.New("the server stopped answering")

// stalled turns the error of a request cut short by its watchdog into a
// retryable one naming the cause.
func stalled(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errStalled) {
		return &retryable{err: errStalled}
	}
	return err
}

// loop runs step until ctx ends: after a retryable error it waits with
// backoff and calls step again; when step reports idle, it waits for a kick.
func (w *Watcher) loop(ctx context.Context, what string, kickCh chan struct{}, step func(context.Context) (idle bool, err error)) error {
	bo := backoff{min: w.cfg.RetryMin, max: w.cfg.RetryMax}
	for {
		idle, err := step(ctx)
		if ctx.Err() != nil {
			if errors.Is(err, errCrash) {
				return err
			}
			return nil
		}
		var re *retryable
		switch {
		case errors.As(err, &re):
			d := bo.next()
			args := []any{"err", re.err, "retry_seconds", d.Seconds()}
			if re.group != "" {
				args = append(args, "group", re.group)
			}
			w.logRetry(what, re.err, args)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		case err != nil:
			return err
		}
		bo.reset()
		if idle {
			select {
			case <-ctx.Done():
				return nil
			case <-kickCh:
			}
		}
	}
}

// submitLoop is the submitter goroutine: pending groups are submitted in
// the order they were found.
func (w *Watcher) submitLoop(ctx context.Context) error {
	c := &conn{w: w}
	defer c.drop()
	return w.loop(ctx, "submission", w.submitKick, func(ctx context.Context) (bool, error) {
		g, err := w.state.next(ctx, StatusPending)
		if err != nil || g == nil {
			return true, err
		}
		err = w.submit(ctx, c, g)
		if err != nil {
			c.drop()
		}
		return false, forGroup(err, g.Name)
	})
}

// submit reads a pending group's files, submits them and records the job.
func (w *Watcher) submit(ctx context.Context, c *conn, g *Group) error {
	log := w.log.With("group", g.Name)
	// An unmounted share looks like vanished files: wait for it instead.
	if _, err := os.Stat(w.cfg.Dir); err != nil {
		return &retryable{err: fmt.Errorf("watched directory: %w", err)}
	}
	var keep, dropped []File
	var whyDropped []error
	buf := make([]byte, hashBufferSize)
	for _, f := range g.Files {
		// A file hashed by an earlier try is only checked again, not read.
		sum, err := f.SHA256, error(nil)
		if sum == "" {
			sum, err = hashFile(ctx, f, buf)
		} else {
			err = unchanged(f)
		}
		switch {
		case errors.Is(err, errChanged) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular):
			dropped, whyDropped = append(dropped, f), append(whyDropped, err)
		case err != nil:
			return &retryable{err: fmt.Errorf("read %s: %w", f.Path, err)}
		default:
			f.SHA256 = sum
			keep = append(keep, f)
		}
	}
	// Files that vanished because the directory went away after the check
	// above are not left out: the group waits for the directory too.
	if len(dropped) > 0 {
		if _, err := os.Stat(w.cfg.Dir); err != nil {
			return &retryable{err: fmt.Errorf("watched directory: %w", err)}
		}
	}
	for i, f := range dropped {
		log.Warn("file changed or vanished before it was submitted; left out of the group", "file", f.Path, "err", whyDropped[i])
	}
	sid := ""
	if len(keep) > 0 {
		sid = SubmissionID(keep, g.Attempt, w.cfg.Options)
	}
	if err := w.state.prepared(ctx, g.ID, keep, dropped, sid); err != nil {
		return err
	}
	g.Files, g.SubmissionID = keep, sid
	if len(keep) == 0 {
		msg := "every file changed or vanished before it could be submitted"
		log.Error("group not submitted", "err", msg)
		return w.end(ctx, g, nil, StatusFailed, msg)
	}

	upload, opts, err := w.withDICOMRef(keep, log)
	if err != nil {
		log.Error("group not submitted", "err", err)
		return w.end(ctx, g, nil, StatusFailed, err.Error())
	}
	cl, err := c.get(ctx)
	if err != nil {
		return err
	}
	paths := make([]string, len(upload))
	var total int64
	for i, f := range upload {
		paths[i] = f.Path
		total += f.Size
	}
	sctx, alive, stop := watchdog(ctx, transferStall)
	sctx, crash := context.WithCancelCause(sctx)
	job, err := cl.Submit(sctx, paths, &client.SubmitOptions{
		Options:      opts,
		SubmissionID: sid,
		Progress: func(done, total int64) {
			alive()
			if w.hooks.uploading != nil && w.hooks.uploading(g, done, total) {
				crash(errCrash)
			}
		},
		// The client resumes a broken upload on a new session by itself;
		// each time is logged, and they are few and quick, so that a
		// server that went away is never met with silence. After them the
		// submitter's backoff (logged too) takes over, and the next try
		// resumes the upload as well.
		Reconnects:     submitReconnects,
		ReconnectDelay: w.cfg.RetryMin,
		OnReconnect: func(attempt int, err error) {
			log.Warn("submission interrupted; reconnecting", "err", err, "reconnect", attempt,
				"max_reconnects", submitReconnects, "submission_id", sid)
		},
	})
	crashed := errors.Is(context.Cause(sctx), errCrash)
	stop()
	crash(nil)
	if crashed {
		return errCrash
	}
	if err = stalled(sctx, err); err != nil {
		err = serverError(err, protocol.CodeBadRequest, protocol.CodeInvalidName, protocol.CodeTooLarge, protocol.CodeConflict)
		var re *retryable
		if errors.As(err, &re) {
			return err
		}
		msg := "the server refused the submission: " + err.Error()
		log.Error("group not submitted", "err", err)
		return w.end(ctx, g, nil, StatusFailed, msg)
	}
	if w.hooks.afterSubmit != nil && w.hooks.afterSubmit(g) {
		return errCrash
	}
	if err := w.state.submitted(ctx, g.ID, job.JobID, string(job.State), time.Now()); err != nil {
		return err
	}
	// The server hashed what it received; it must be what was hashed here.
	for _, jf := range job.Files {
		for _, f := range keep {
			if filepath.Base(f.Path) == jf.Name && f.SHA256 != jf.SHA256 {
				log.Error("file changed while it was sent; the job has other contents than were recorded",
					"job_id", job.JobID, "file", f.Path)
			}
		}
	}
	log.Info("group submitted", "job_id", job.JobID, "submission_id", sid, "attempt", g.Attempt,
		"files", len(keep), "bytes", total, "state", job.State)
	kick(w.collectKick)
	return nil
}

var errChanged = errors.New("size or modification time changed")

// unchanged checks that the file is still the regular file of the recorded
// size and mtime.
func unchanged(f File) error {
	info, err := os.Lstat(f.Path)
	switch {
	case err != nil:
		return err
	case !info.Mode().IsRegular():
		return errNotRegular
	case info.Size() != f.Size || !info.ModTime().Equal(f.ModTime):
		return errChanged
	}
	return nil
}

// hashFile reads the file and returns its SHA-256, checking that it is
// still the file that was recorded (size and mtime) before and after.
func hashFile(ctx context.Context, f File, buf []byte) (string, error) {
	if info, err := os.Lstat(f.Path); err != nil {
		return "", err
	} else if !info.Mode().IsRegular() {
		return "", errNotRegular
	}
	fh, err := openNoBlock(f.Path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	same := func() error {
		info, err := fh.Stat()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return errNotRegular
		}
		if info.Size() != f.Size || !info.ModTime().Equal(f.ModTime) {
			return errChanged
		}
		return nil
	}
	if err := same(); err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(ctxReader{ctx, fh}, f.Size+1), buf)
	if err != nil {
		return "", err
	}
	if n != f.Size {
		return "", errChanged
	}
	if err := same(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// collectLoop is the collector goroutine: submitted groups are followed
// in the order they were submitted, and their results downloaded.
func (w *Watcher) collectLoop(ctx context.Context) error {
	c := &conn{w: w}
	defer c.drop()
	return w.loop(ctx, "collecting a job", w.collectKick, func(ctx context.Context) (bool, error) {
		g, err := w.state.next(ctx, StatusSubmitted)
		if err != nil || g == nil {
			return true, err
		}
		err = w.collect(ctx, c, g)
		if err != nil {
			c.drop()
		}
		return false, forGroup(err, g.Name)
	})
}

// collect waits for a submitted group's job to end, downloads its results,
// writes the summary and records the end.
func (w *Watcher) collect(ctx context.Context, c *conn, g *Group) error {
	log := w.log.With("group", g.Name, "job_id", g.JobID)
	cl, err := c.get(ctx)
	if err != nil {
		return err
	}
	wctx, alive, stop := watchdog(ctx, waitSilence)
	job, err := cl.Wait(wctx, g.JobID, func(j client.Job) {
		alive()
		if string(j.State) != g.JobState {
			log.Debug("job state", "state", j.State, "position", j.Position)
		}
	})
	stop()
	if err = stalled(wctx, err); err != nil {
		if err = serverError(err, protocol.CodeNotFound); protocol.IsCode(err, protocol.CodeNotFound) {
			msg := "the server no longer knows the job: " + err.Error()
			log.Error("job lost", "err", err)
			return w.end(ctx, g, nil, StatusFailed, msg)
		}
		return err
	}
	if job.State == client.StateFailed && g.Attempt < w.cfg.MaxAttempts {
		log.Error("job failed; submitting the group again", "state", job.State, "err", job.Error,
			"exit_code", job.ExitCode, "attempt", g.Attempt, "max_attempts", w.cfg.MaxAttempts)
		if err := w.state.retry(ctx, g.ID, job.Error); err != nil {
			return err
		}
		kick(w.submitKick)
		return nil
	}
	if w.hooks.beforeFetch != nil && w.hooks.beforeFetch(g) {
		return errCrash
	}
	dir := filepath.Join(w.cfg.DownloadDir, g.Name)
	var problem string
	switch {
	case len(job.Results) == 0:
	case job.Delivered:
		// Delivered, but not recorded here: a crash after the download.
		if err := verifyResults(dir, job.Results); err != nil {
			problem = "the results were delivered but are not all in " + dir + ": " + err.Error()
		}
	case job.ResultsGone:
		problem = "the results expired on the server before they were downloaded"
	default:
		fctx, alive, stop := watchdog(ctx, transferStall)
		fctx, crash := context.WithCancelCause(fctx)
		j, _, err := cl.Fetch(fctx, g.JobID, dir, &client.FetchOptions{Progress: func(done, total int64) {
			alive()
			if w.hooks.downloading != nil && w.hooks.downloading(g, done, total) {
				crash(errCrash)
			}
		}})
		crashed := errors.Is(context.Cause(fctx), errCrash)
		stop()
		crash(nil)
		if crashed {
			return errCrash
		}
		if err = stalled(fctx, err); err != nil {
			err = serverError(err, protocol.CodeNotFound, protocol.CodeGone)
			var re *retryable
			if errors.As(err, &re) {
				return fmt.Errorf("download results: %w", err)
			}
			// Gone: perhaps fetched by hand into the same directory.
			if verifyResults(dir, job.Results) != nil {
				problem = "download results: " + err.Error()
			}
		} else {
			job = j
		}
		if w.hooks.afterFetch != nil && w.hooks.afterFetch(g) {
			return errCrash
		}
	}
	status, msg := StatusDone, ""
	switch {
	case job.State != client.StateSucceeded:
		status, msg = StatusFailed, "job "+string(job.State)
		if job.Error != "" {
			msg += ": " + job.Error
		}
		log.Error("job failed", "state", job.State, "err", job.Error, "exit_code", job.ExitCode, "attempt", g.Attempt)
	case problem != "":
		status, msg = StatusFailed, problem
		log.Error("results not downloaded", "err", problem)
	default:
		log.Info("group done", "results", len(job.Results), "dir", dir)
	}
	return w.end(ctx, g, job, status, msg)
}

// end writes the group's summary and records its end.
func (w *Watcher) end(ctx context.Context, g *Group, job *client.Job, status, msg string) error {
	now := time.Now()
	jobState := g.JobState
	if job != nil {
		jobState = string(job.State)
	}
	g.Status, g.JobState, g.Error, g.FinishedAt = status, jobState, msg, now
	if err := w.writeSummary(g, job); err != nil {
		// The summary is a convenience: its loss does not keep the group open.
		w.log.Error("cannot write the group's summary", "group", g.Name, "err", err)
	}
	return w.state.finish(ctx, g.ID, status, jobState, msg, now)
}

// summary is the JSON document written beside a group's results.
type summary struct {
	*Group
	ExitCode   *int             `json:"exit_code,omitempty"`
	JobSubmit  *time.Time       `json:"job_submitted_at,omitempty"`
	JobStarted *time.Time       `json:"job_started_at,omitempty"`
	JobEnded   *time.Time       `json:"job_finished_at,omitempty"`
	Results    []client.FileSum `json:"results"`
}

func (w *Watcher) writeSummary(g *Group, job *client.Job) error {
	dir := filepath.Join(w.cfg.DownloadDir, g.Name)
	s := summary{Group: g, Results: []client.FileSum{}}
	name := SummaryName
	if job != nil {
		s.ExitCode, s.JobStarted, s.JobEnded = job.ExitCode, job.StartedAt, job.FinishedAt
		if !job.SubmittedAt.IsZero() {
			s.JobSubmit = &job.SubmittedAt
		}
		if job.Results != nil {
			s.Results = job.Results
		}
		for _, r := range job.Results {
			if r.Name == name {
				name = "recon-summary-" + job.JobID + ".json"
			}
		}
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// verifyResults checks that dir holds every result of the manifest with
// its size and SHA-256.
func verifyResults(dir string, results []client.FileSum) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	buf := make([]byte, hashBufferSize)
	for _, r := range results {
		f, err := root.Open(filepath.FromSlash(r.Name))
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, f, buf)
		f.Close()
		if err != nil {
			return err
		}
		if n != r.Size || hex.EncodeToString(h.Sum(nil)) != r.SHA256 {
			return fmt.Errorf("%s differs from the job's manifest", r.Name)
		}
	}
	return nil
}
