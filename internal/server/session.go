package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// eventKeepalive is how often a waiting client is re-sent the job's state
// while nothing changes, so neither side's idle timeout ends a long wait.
const eventKeepalive = 30 * time.Second

// positionSettle is how long a waiting client's queued job waits, after
// other jobs left the queue, before its new position is read and sent.
const positionSettle = 20 * time.Millisecond

// errSessionOver ends a session without an error reply.
var errSessionOver = errors.New("session over")

// serveClient answers a client's requests in sequence until it closes the
// session or breaks the protocol.
func (s *Server) serveClient(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	s.serveRequests(ctx, c, log, s.handleClient)
}

// messageError is the wire error for a control message that could not be
// read because it is malformed or too large, or nil for any other error
// (a broken connection, which cannot carry an answer).
func messageError(err error) *protocol.Error {
	switch {
	case errors.Is(err, protocol.ErrMessageTooLarge):
		return protocol.Errorf(protocol.CodeTooLarge, "%v", err)
	case errors.Is(err, protocol.ErrBadMessage):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, protocol.ErrBusy):
		return protocol.Errorf(protocol.CodeUnavailable, "server busy: %v; try again", err)
	}
	return nil
}

// armWrite gives the peer the idle timeout to take the next reply: a peer
// that stops reading cannot hold a session forever.
func (s *Server) armWrite(c *secure.Conn) {
	c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
}

// serveRequests reads requests and hands each to handle, until the peer
// closes the session, breaks the protocol or a request fails in a way the
// session cannot survive. A handler's *protocol.Error is sent to the peer;
// after a bad request or a fatalErr the session closes. An internalErr is
// logged in full and reported without detail.
func (s *Server) serveRequests(ctx context.Context, c *secure.Conn, log *slog.Logger,
	handle func(context.Context, *secure.Conn, protocol.Message, *slog.Logger) error) {
	for {
		m, err := s.msgs.ReadMessage(ctx, c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("session ended", "err", err)
			}
			if pe := messageError(err); pe != nil {
				// The peer sent a message that is not one: say why, then
				// close.
				s.armWrite(c)
				protocol.WriteError(c, pe)
			}
			return
		}
		// Every reply must be read within the idle timeout; handlers that
		// run longer (uploads, events, results) re-arm it.
		s.armWrite(c)
		err = handle(ctx, c, m, log)
		m.Release() // if the handler did not decode it
		if err == nil {
			continue
		}
		var pe *protocol.Error
		if errors.As(err, &pe) {
			log.Info("request refused", "request", string(m.Type), "code", string(pe.Code), "err", pe.Message)
			s.armWrite(c)
			if protocol.WriteError(c, pe) != nil {
				return
			}
			var fe *fatalErr
			if pe.Code == protocol.CodeBadRequest || errors.As(err, &fe) {
				// A peer that breaks the protocol gets one answer, then the
				// door.
				return
			}
			continue
		}
		var ie *internalErr
		if errors.As(err, &ie) {
			log.Error("request failed", "request", string(m.Type), "err", err)
			s.armWrite(c)
			protocol.WriteError(c, protocol.Errorf(protocol.CodeInternal, "internal server error; see the server log"))
			return
		}
		if !errors.Is(err, errSessionOver) && ctx.Err() == nil {
			log.Warn("session ended", "request", string(m.Type), "err", err)
		}
		return
	}
}

func (s *Server) handleClient(ctx context.Context, c *secure.Conn, m protocol.Message, log *slog.Logger) error {
	switch m.Type {
	case protocol.TypeStatus:
		if err := m.Decode(m.Type, &protocol.Empty{}); err != nil {
			return badRequest(err)
		}
		st, err := s.status(ctx)
		if err != nil {
			return err
		}
		return protocol.WriteMessage(c, protocol.TypeStatusReply, st)
	case protocol.TypeJobStatus:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		j, err := s.job(ctx, ref.JobID)
		if err != nil {
			return err
		}
		return protocol.WriteMessage(c, protocol.TypeJob, j)
	case protocol.TypeQueue:
		if err := m.Decode(m.Type, &protocol.Empty{}); err != nil {
			return badRequest(err)
		}
		q, err := s.queue(ctx, time.Now().Add(-24*time.Hour))
		if err != nil {
			return err
		}
		return protocol.WriteMessage(c, protocol.TypeQueueReply, q)
	case protocol.TypeSubmit:
		var sub protocol.Submit
		if err := m.Decode(m.Type, &sub); err != nil {
			return badRequest(err)
		}
		return s.receiveSubmission(ctx, c, &sub, log)
	case protocol.TypeWait:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		return s.sendEvents(ctx, c, ref.JobID)
	case protocol.TypeFetch:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		return s.sendResults(ctx, c, ref.JobID, log)
	default:
		return protocol.Errorf(protocol.CodeBadRequest, "unknown request %q", truncateString(string(m.Type), 40))
	}
}

func badRequest(err error) error {
	return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Server) status(ctx context.Context) (*protocol.StatusReply, error) {
	counts, err := s.store.Counts(ctx)
	if err != nil {
		return nil, internalError(err)
	}
	byState := map[string]int{}
	for st, n := range counts {
		byState[string(st)] = n
	}
	return &protocol.StatusReply{
		Version:       s.version,
		Protocol:      protocol.Version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		StartedAt:     s.started.UTC(),
		Jobs:          byState,
		MaxWorkers:    s.pool.size(),
	}, nil
}

// job looks up one job for a client.
func (s *Server) job(ctx context.Context, id string) (*protocol.JobInfo, error) {
	if !jobs.ValidID(id) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", truncateString(id, 64))
	}
	// The job and its queue position are two reads: a job claimed between
	// them would show as queued at position 0, so read it again then.
	for try := 0; ; try++ {
		j, err := s.store.Get(ctx, id)
		if errors.Is(err, jobs.ErrNotFound) {
			return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
		}
		if err != nil {
			return nil, internalError(err)
		}
		info := jobInfo(j)
		if j.State != jobs.Queued {
			return info, nil
		}
		if info.Position, err = s.store.QueuePosition(ctx, id); err != nil {
			return nil, internalError(err)
		}
		if info.Position > 0 || try == 2 {
			return info, nil
		}
	}
}

func (s *Server) queue(ctx context.Context, finishedSince time.Time) (*protocol.QueueReply, error) {
	list, err := s.store.List(ctx, jobs.ListOptions{IncludeFinishedSince: finishedSince, Limit: 1000})
	if err != nil {
		return nil, internalError(err)
	}
	q := &protocol.QueueReply{Jobs: []protocol.JobInfo{}}
	pos := 0
	for _, j := range list {
		info := jobInfo(j)
		if j.State == jobs.Queued {
			pos++
			info.Position = pos
		}
		q.Jobs = append(q.Jobs, *info)
	}
	// Jobs with long file lists fill a message sooner: the finished ones
	// at the end go first.
	protocol.FitQueue(q)
	return q, nil
}

// sendEvents streams the job's state to the client until it ends.
func (s *Server) sendEvents(ctx context.Context, c *secure.Conn, id string) error {
	var last protocol.JobInfo
	first := true
	for {
		wake, seen := s.changed.mark() // before reading, so no change is missed
		info, err := s.job(ctx, id)
		if err != nil {
			return err
		}
		if first || info.State != last.State || info.Position != last.Position {
			s.armWrite(c)
			if err := protocol.WriteMessage(c, protocol.TypeEvent, protocol.Event{Job: *info}); err != nil {
				return err
			}
			first = false
			last = *info
		}
		if info.Terminal() {
			return nil
		}
		// Read the job again at once when a change may concern it, and
		// when jobs left the queue (so a queued one moved forward) after
		// positionSettle, which gathers the moves of a busy queue into one
		// reading.
		queued := info.State == string(jobs.Queued)
		t := time.NewTimer(eventKeepalive)
		var settle <-chan time.Time
		for again := false; !again; {
			select {
			case <-wake:
				var self, moved bool
				self, moved, wake, seen = s.changed.check(seen, id)
				again = self
				if moved && queued && settle == nil {
					settle = time.After(positionSettle)
				}
			case <-settle:
				again = true
			case <-t.C:
				first = true // resend as a keepalive
				again = true
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		t.Stop()
	}
}

// fatalErr marks an error after which the session cannot go on, because
// the byte stream is no longer in step (a file upload failed midway): the
// client gets the error, then the connection closes.
type fatalErr struct{ err error }

func (e *fatalErr) Error() string { return e.err.Error() }
func (e *fatalErr) Unwrap() error { return e.err }

func internalError(err error) error {
	return &internalErr{err}
}

// internalErr is logged in full and reported to the client without detail.
type internalErr struct{ err error }

func (e *internalErr) Error() string { return e.err.Error() }
func (e *internalErr) Unwrap() error { return e.err }

func jobInfo(j *jobs.Job) *protocol.JobInfo {
	info := &protocol.JobInfo{
		JobID:        j.ID,
		State:        string(j.State),
		SubmittedAt:  j.SubmittedAt.UTC(),
		Files:        fileSums(j.Files),
		Options:      j.Options,
		Attempts:     j.Attempts,
		ExitCode:     j.ExitCode,
		Error:        j.Error,
		Results:      fileSums(j.Results),
		Delivered:    !j.DeliveredAt.IsZero(),
		ResultsGone:  !j.ResultsRemovedAt.IsZero(),
		ClientAddr:   j.ClientAddr,
		SubmissionID: j.SubmissionID,
	}
	if !j.StartedAt.IsZero() {
		t := j.StartedAt.UTC()
		info.StartedAt = &t
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt.UTC()
		info.FinishedAt = &t
	}
	return info
}

func fileSums(fs []jobs.File) []protocol.FileSum {
	if len(fs) == 0 {
		return nil
	}
	out := make([]protocol.FileSum, len(fs))
	for i, f := range fs {
		out[i] = protocol.FileSum{Name: f.Name, Size: f.Size, SHA256: f.SHA256}
	}
	return out
}
