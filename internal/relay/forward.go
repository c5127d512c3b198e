package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// reasonTimeout bounds the wait for a backend's error message after a
// write to it failed.
const reasonTimeout = 2 * time.Second

// checkAnnounced checks what the relay itself relies on to stream a
// submission: a file count within the absolute cap and sizes that are not
// negative and add up without overflow. Everything else (names, options,
// the site's limits) is the backend's to judge.
func checkAnnounced(files []protocol.FileInfo) error {
	switch {
	case len(files) == 0:
		return protocol.Errorf(protocol.CodeBadRequest, "a job needs at least one file")
	case len(files) > protocol.MaxFilesAbsolute:
		return protocol.Errorf(protocol.CodeTooLarge, "too many files: %d, at most %d", len(files), protocol.MaxFilesAbsolute)
	}
	var total int64
	for _, f := range files {
		if f.Size < 0 {
			return protocol.Errorf(protocol.CodeBadRequest, "file %q has a negative size", rpc.Truncate(f.Name, 80))
		}
		if f.Size > math.MaxInt64-total {
			return protocol.Errorf(protocol.CodeTooLarge, "the files add up to more bytes than can be counted")
		}
		total += f.Size
	}
	return nil
}

// retryElsewhere reports whether a backend's refusal of a submission, before
// it accepted any file, may be different on another backend. A malformed
// request or file name is refused everywhere alike.
func retryElsewhere(err error) bool {
	return !protocol.IsCode(err, protocol.CodeBadRequest) && !protocol.IsCode(err, protocol.CodeInvalidName)
}

// submit places a submission on a backend and relays its files.
func (r *Relay) submit(ctx context.Context, c *secure.Conn, cs *clientSession, sub *protocol.Submit, log *slog.Logger) error {
	if err := checkAnnounced(sub.Files); err != nil {
		return err
	}
	order, pinned, err := r.submitOrder(ctx, submissionRoute(cs.identity, sub.SubmissionID), sub.SubmissionID, log)
	if err != nil {
		return err
	}
	if len(order) == 0 {
		return protocol.Errorf(protocol.CodeUnavailable, "no backend is available: all %d are down; try again later", len(r.pool.backends))
	}
	var lastWire error
	var tried []string
	for _, b := range order {
		r.pool.reserve(b)
		bc, ready, err := r.offer(ctx, b, cs.identity, cs.hash, sub)
		if err != nil {
			r.pool.release(b, false)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ie *rpc.InternalError
			if errors.As(err, &ie) {
				return err
			}
			if b == pinned && !mayHoldNoJob(err) {
				// It may hold the job of this submission: no other
				// backend may make a second one.
				if isWireError(err) {
					return err
				}
				return protocol.Errorf(protocol.CodeUnavailable,
					"submission %s was handed over to backend %s, which may hold its job and cannot be reached now: retry when it is back", sub.SubmissionID, b.addr)
			}
			if isWireError(err) {
				if !retryElsewhere(err) {
					return err
				}
				lastWire = err
			}
			tried = append(tried, b.addr)
			log.Info("backend did not take the submission; trying the next", "backend", b.addr, "err", err)
			continue
		}
		placed, err := r.upload(ctx, c, cs, b, bc, sub, ready, log)
		bc.Close()
		r.pool.release(b, placed)
		return err
	}
	if lastWire != nil {
		return lastWire
	}
	return protocol.Errorf(protocol.CodeUnavailable, "no backend could be reached (tried %s); try again later", strings.Join(tried, ", "))
}

// mayHoldNoJob reports whether a backend's refusal of a submission shows
// that it holds no job for its submission id: a server looks the id up
// before it checks its queue and disk space.
func mayHoldNoJob(err error) bool {
	return protocol.IsCode(err, protocol.CodeQueueFull) || protocol.IsCode(err, protocol.CodeNoSpace)
}

// submitOrder is the order in which to offer a submission to backends.
//
// A submission id sent to a backend before goes to that one first: it
// returns the job it already has, or resumes the upload it kept. If the
// last file had been handed over there (pinned), that backend may have
// made a job of it, so no other backend may take the submission unless
// that one shows it has none; if it is down, the retry must wait for it.
// An upload that broke before its last file was handed over cannot have
// become a job, so if its backend is down the submission goes to the
// others and starts over there (what the first one kept expires after its
// UPLOAD_RESUME_HOURS).
//
// key is the submission's route (submissionRoute), sid its id.
func (r *Relay) submitOrder(ctx context.Context, key, sid string, log *slog.Logger) (order []*backend, pinned *backend, err error) {
	order = r.pool.candidates()
	if sid == "" {
		return order, nil, nil
	}
	addr, handedOver, err := r.routes.submission(ctx, key)
	if errors.Is(err, errNoRoute) {
		return order, nil, nil
	}
	if err != nil {
		return nil, nil, rpc.Internal(err)
	}
	b := r.pool.get(addr)
	if b == nil {
		return order, nil, nil // no longer a backend: start afresh
	}
	if !r.pool.isHealthy(b) {
		if handedOver {
			return nil, nil, protocol.Errorf(protocol.CodeUnavailable,
				"submission %s was handed over to backend %s before, which may hold its job and is down: retry when it is back", sid, b.addr)
		}
		log.Info("backend of an unfinished upload is down; placing the submission elsewhere", "submission_id", sid, "backend", b.addr)
		return order, nil, nil
	}
	out := []*backend{b}
	for _, o := range order {
		if o != b {
			out = append(out, o)
		}
	}
	if handedOver {
		pinned = b
	}
	return out, pinned, nil
}

// offer opens a session to b for identity and sends it the submission. It
// returns the session once b is ready for the files (or knows the
// submission already).
func (r *Relay) offer(ctx context.Context, b *backend, identity, hash string, sub *protocol.Submit) (*secure.Conn, *protocol.SubmitReady, error) {
	bc, err := r.pool.dial(ctx, b, identity, hash)
	if err != nil {
		return nil, nil, err
	}
	if sub.SubmissionID != "" {
		if err := r.routes.putSubmission(ctx, submissionRoute(identity, sub.SubmissionID), b.addr); err != nil {
			bc.Close()
			return nil, nil, rpc.Internal(err)
		}
	}
	var ready protocol.SubmitReady
	if err := roundTrip(ctx, bc, protocol.TypeSubmit, sub, protocol.TypeSubmitReady, &ready); err != nil {
		bc.Close()
		if !isWireError(err) {
			r.pool.failed(ctx, b, err)
		}
		return nil, nil, err
	}
	return bc, &ready, nil
}

// upload relays the files of a submission b has accepted, then its verdict.
// placed reports whether b queued a new job.
func (r *Relay) upload(ctx context.Context, c *secure.Conn, cs *clientSession, b *backend, bc *secure.Conn,
	sub *protocol.Submit, ready *protocol.SubmitReady, log *slog.Logger) (placed bool, err error) {
	stop := context.AfterFunc(ctx, func() { bc.Close() })
	defer stop()
	cs.about("", b.addr)
	if ready.Existing {
		if ready.Job == nil || !jobs.ValidID(ready.Job.JobID) {
			return false, rpc.Internal(fmt.Errorf("backend %s: submit_ready for an existing job without a valid job", b.addr))
		}
		cs.about(ready.Job.JobID, "")
		if err := r.routes.putJob(ctx, ready.Job.JobID, b.addr, cs.identity); err != nil {
			return false, rpc.Internal(err)
		}
		if err := r.routes.handOver(ctx, submissionRoute(cs.identity, sub.SubmissionID), b.addr); err != nil {
			return false, rpc.Internal(err)
		}
		bc.CloseWrite()
		ready.Job.Backend = b.addr
		return false, protocol.WriteMessage(c, protocol.TypeSubmitReady, ready)
	}
	// A backend that kept a broken upload of this submission says how much
	// of each file it holds; the client sends only the rest.
	if err := protocol.CheckResume(ready.Resume, sub.Files); err != nil {
		return false, rpc.Internal(fmt.Errorf("backend %s: %w", b.addr, err))
	}
	if err := protocol.WriteMessage(c, protocol.TypeSubmitReady, protocol.SubmitReady{Resume: ready.Resume, Note: ready.Note}); err != nil {
		return false, err
	}
	start := time.Now()
	var total int64
	handedOver := false
	for i, f := range sub.Files {
		n := f.Size
		if ready.Resume != nil {
			n -= ready.Resume[i]
		}
		rerr, werr := secure.Forward(bc, c, n, r.forwarding(&cs.bytesIn, &r.bytesIn))
		if rerr != nil {
			// The backend keeps the partial upload for a resume (through
			// this relay, the submission id leads back to it) or drops it.
			log.Info("upload from client broke", "backend", b.addr, "file", f.Name, "err", rerr)
			return false, rpc.ErrSessionOver
		}
		if werr != nil {
			return false, r.uploadFailed(ctx, b, bc, handedOver, werr, log)
		}
		m, err := r.msgs.ReadMessage(ctx, c)
		if err != nil {
			log.Info("upload from client broke", "backend", b.addr, "file", f.Name, "err", err)
			return false, rpc.ErrSessionOver
		}
		var done protocol.FileDone
		if err := m.Decode(protocol.TypeFileDone, &done); err != nil {
			return false, rpc.Fatal(rpc.BadRequest(fmt.Errorf("file %q: %w", f.Name, err)))
		}
		if i == len(sub.Files)-1 && sub.SubmissionID != "" {
			// From the last FileDone on, b may make a job of the
			// submission: a retry must not go elsewhere.
			if err := r.routes.handOver(ctx, submissionRoute(cs.identity, sub.SubmissionID), b.addr); err != nil {
				return false, rpc.Internal(err)
			}
			handedOver = true
		}
		r.armWrite(bc)
		if err := protocol.WriteMessage(bc, protocol.TypeFileDone, done); err != nil {
			return false, r.uploadFailed(ctx, b, bc, handedOver, err, log)
		}
		total += n
	}
	m, err := protocol.ReadMessage(bc)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		r.pool.failed(ctx, b, err)
		return false, protocol.Errorf(protocol.CodeUnavailable,
			"lost the connection to backend %s before it confirmed the job, which may or may not be queued there: "+
				"submit again (with the same submission id, to be sure of no duplicate)", b.addr)
	}
	var job protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &job); err != nil {
		if isWireError(err) {
			return false, err // e.g. a hash mismatch; the client's stream is in step
		}
		return false, rpc.Internal(fmt.Errorf("backend %s: %w", b.addr, err))
	}
	if !jobs.ValidID(job.JobID) {
		return false, rpc.Internal(fmt.Errorf("backend %s: job reply without a valid job id", b.addr))
	}
	cs.about(job.JobID, "")
	// Durable before the client hears of the job.
	if err := r.routes.putJob(ctx, job.JobID, b.addr, cs.identity); err != nil {
		return false, rpc.Internal(err)
	}
	bc.CloseWrite()
	r.jobsRelayed.Add(1)
	log.Info("job placed", "job_id", job.JobID, "backend", b.addr, "files", len(sub.Files), "bytes", total,
		"seconds", time.Since(start).Seconds(), "submission_id", sub.SubmissionID)
	job.Backend = b.addr
	r.armWrite(c)
	return true, protocol.WriteMessage(c, protocol.TypeJob, job)
}

// uploadFailed reports a failed write to the backend during an upload: the
// backend's own error if it sent one before it stopped reading, else a
// broken connection (and the backend is marked down). Either way the
// client's stream is out of step, so its session ends after the error.
//
// A backend lost before the last FileDone was handed to it cannot have
// made a job of the upload. The client package takes the unavailable
// error it gets in the middle of an upload as a reason to submit again
// with the same submission id, and submitOrder then places it on another
// backend while this one is down, so the caller does not notice.
func (r *Relay) uploadFailed(ctx context.Context, b *backend, bc *secure.Conn, handedOver bool, werr error, log *slog.Logger) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	bc.SetReadDeadline(time.Now().Add(reasonTimeout))
	if m, err := protocol.ReadMessage(bc); err == nil {
		if derr := m.Decode(protocol.TypeJob, nil); isWireError(derr) {
			return rpc.Fatal(derr)
		}
	}
	log.Warn("upload to backend broke", "backend", b.addr, "handed_over", handedOver, "err", werr)
	r.pool.failed(ctx, b, werr)
	if handedOver {
		return rpc.Fatal(protocol.Errorf(protocol.CodeUnavailable,
			"lost the connection to backend %s as the last file was handed over; the job may or may not be queued there: "+
				"submit again with the same submission id when the backend is back", b.addr))
	}
	return rpc.Fatal(protocol.Errorf(protocol.CodeUnavailable,
		"lost backend %s during the upload, before it had the whole job: submit again with the same submission id "+
			"(the client does so by itself) and the upload goes to another backend, or resumes on this one if it is back", b.addr))
}

// fetch relays a finished job's results from its backend, and the client's
// acknowledgement back.
func (r *Relay) fetch(ctx context.Context, c *secure.Conn, cs *clientSession, id string, log *slog.Logger) error {
	b, err := r.route(ctx, cs.identity, id)
	if err != nil {
		return err
	}
	cs.about(id, b.addr)
	bc, err := r.open(ctx, b, cs.identity, cs.hash, id)
	if err != nil {
		return err
	}
	defer bc.Close()
	stop := context.AfterFunc(ctx, func() { bc.Close() })
	defer stop()
	var res protocol.Results
	if err := roundTrip(ctx, bc, protocol.TypeFetch, protocol.JobRef{JobID: id}, protocol.TypeResults, &res); err != nil {
		if isWireError(err) {
			return err
		}
		return r.lost(ctx, b, id, err)
	}
	var total int64
	for _, f := range res.Files {
		if f.Size < 0 || f.Size > math.MaxInt64-total {
			return rpc.Internal(fmt.Errorf("backend %s sent a bad result manifest for job %s", b.addr, id))
		}
		total += f.Size
	}
	res.Job.Backend = b.addr
	if err := protocol.WriteMessage(c, protocol.TypeResults, res); err != nil {
		return err
	}
	start := time.Now()
	for _, f := range res.Files {
		rerr, werr := secure.Forward(c, bc, f.Size, r.forwarding(&cs.bytesOut, &r.bytesOut))
		if rerr != nil {
			// Out of step: the client sees its connection end before the
			// file does, and reports it.
			log.Warn("results from backend broke", "job_id", id, "backend", b.addr, "file", f.Name, "err", rerr)
			return rpc.ErrSessionOver
		}
		if werr != nil {
			log.Info("client went away during results", "job_id", id, "err", werr)
			return rpc.ErrSessionOver
		}
	}
	m, err := r.msgs.ReadMessage(ctx, c)
	if err != nil {
		return rpc.ErrSessionOver
	}
	var ack protocol.JobRef
	if err := m.Decode(protocol.TypeAck, &ack); err != nil {
		return rpc.BadRequest(err)
	}
	var done protocol.JobRef
	if err := roundTrip(ctx, bc, protocol.TypeAck, ack, protocol.TypeAckDone, &done); err != nil {
		if isWireError(err) {
			return err
		}
		return r.lost(ctx, b, id, err)
	}
	bc.CloseWrite()
	log.Info("results relayed", "job_id", id, "backend", b.addr, "files", len(res.Files), "bytes", total,
		"seconds", time.Since(start).Seconds())
	r.armWrite(c)
	return protocol.WriteMessage(c, protocol.TypeAckDone, done)
}

// forwarding is how a request's file bytes pass through the relay: each
// write gets the idle timeout (a peer that stops reading, a client or a
// backend that hangs, cannot block a transfer for ever), and what is
// written is added to the counters.
func (r *Relay) forwarding(counters ...*atomic.Int64) secure.Forwarding {
	return secure.Forwarding{
		WriteTimeout: r.opts.IdleTimeout,
		Progress: func(n int) {
			for _, c := range counters {
				c.Add(int64(n))
			}
		},
	}
}

// armWrite gives the peer of c (a client, or a backend) the idle timeout
// to take the next message.
func (r *Relay) armWrite(c *secure.Conn) {
	c.SetWriteDeadline(time.Now().Add(r.opts.IdleTimeout))
}
