package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// eventKeepalive is how often a waiting client is re-sent the job's state
// while nothing changes, so neither side's idle timeout ends a long wait.
const eventKeepalive = 30 * time.Second

// positionSettle is how long a waiting client's queued job waits, after
// other jobs left the queue, before its new position is read and sent.
const positionSettle = 20 * time.Millisecond

// session is a client's or an administrator's connection as a handler
// sees it; State.Identity is the client identity (identity.go).
type session = rpc.Session[*sessionState]

// serveClient answers a client's requests in sequence until it closes the
// session or breaks the protocol.
func (s *Server) serveClient(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	if c.OldProtocol() {
		rpc.TellToUpgrade(c, log, "server")
		return
	}
	st := s.ids.open(c)
	if st == nil {
		log.Info("session closed: its key was removed by a reload during its handshake")
		return
	}
	defer s.ids.close(st)
	// A relay's session is audited as the relay; the identity it then acts
	// for is on each record of what it does.
	who := st.Identity
	if st.relay {
		who = relayKeyName
	}
	if !s.auditSession(ctx, c, "client", who) {
		return
	}
	if st.relay {
		log = log.With("relay_session", true)
	} else {
		log = log.With("identity", st.Identity)
	}
	s.clientMux.Serve(ctx, c, log, st)
}

// newMux is an empty request table for the server's sessions.
func (s *Server) newMux() *rpc.Mux[*sessionState] {
	return &rpc.Mux[*sessionState]{Name: "server", Unknown: "request", Budget: s.msgs,
		IdleTimeout: s.opts.IdleTimeout, EndLevel: slog.LevelWarn}
}

// armWrite gives the peer the idle timeout to take the next reply: a peer
// that stops reading cannot hold a session forever.
func (s *Server) armWrite(c *secure.Conn) {
	c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
}

// clientRequests is the table of a client session's requests.
//
// Every job request acts for the session's identity (owner): another
// identity's job answers exactly as a job that does not exist.
func (s *Server) clientRequests() *rpc.Mux[*sessionState] {
	m := s.newMux()
	rpc.Reply(m, protocol.TypeStatus, protocol.TypeStatusReply, func(ctx context.Context, ss *session, _ *protocol.Empty) (*protocol.StatusReply, error) {
		st, err := s.status(ctx)
		if err == nil {
			st.RelaySession = ss.State.relay
		}
		return st, err
	})
	rpc.Handle(m, protocol.TypeActAs, func(ctx context.Context, ss *session, req *protocol.ActAs) error {
		return s.actAs(ss, req)
	})
	rpc.Reply(m, protocol.TypeHello, protocol.TypeHelloReply, func(ctx context.Context, ss *session, req *protocol.Hello) (*protocol.HelloReply, error) {
		return hello(ss, req)
	})
	rpc.Reply(m, protocol.TypeJobStatus, protocol.TypeJob, func(ctx context.Context, ss *session, ref *protocol.JobRef) (*protocol.JobInfo, error) {
		who, err := owner(ss)
		if err != nil {
			return nil, err
		}
		return s.job(ctx, who, ss.State.hash, ref.JobID)
	})
	rpc.Reply(m, protocol.TypeQueue, protocol.TypeQueueReply, func(ctx context.Context, ss *session, _ *protocol.Empty) (*protocol.QueueReply, error) {
		who, err := owner(ss)
		if err != nil {
			return nil, err
		}
		return s.queue(ctx, who, ss.State.hash, time.Now().Add(-24*time.Hour))
	})
	rpc.Handle(m, protocol.TypeSubmit, func(ctx context.Context, ss *session, sub *protocol.Submit) error {
		who, err := owner(ss)
		if err != nil {
			return err
		}
		return s.receiveSubmission(ctx, ss.Conn, who, sessionHash(ss), sub, ss.Log)
	})
	rpc.Handle(m, protocol.TypeWait, func(ctx context.Context, ss *session, ref *protocol.JobRef) error {
		who, err := owner(ss)
		if err != nil {
			return err
		}
		return s.sendEvents(ctx, ss.Conn, who, ss.State.hash, ref.JobID)
	})
	rpc.Handle(m, protocol.TypeFetch, func(ctx context.Context, ss *session, ref *protocol.JobRef) error {
		who, err := owner(ss)
		if err != nil {
			return err
		}
		return s.sendResults(ctx, ss.Conn, who, sessionHash(ss), ref.JobID, ss.Log)
	})
	rpc.Reply(m, protocol.TypeCancel, protocol.TypeCancelReply, func(ctx context.Context, ss *session, ref *protocol.JobRef) (*protocol.CancelReply, error) {
		who, err := owner(ss)
		if err != nil {
			return nil, err
		}
		// Audited before it takes effect: a cancel is never unaudited.
		if err := s.recordCancel(ctx, ss.Conn, who, ref.JobID); err != nil {
			return nil, err
		}
		rep, err := s.cancel(ctx, who, ref.JobID)
		if err == nil {
			ss.Log.Info("job cancelled by its owner", "job_id", ref.JobID, "previous_state", rep.PreviousState)
		}
		return rep, err
	})
	return m
}

func (s *Server) status(ctx context.Context) (*protocol.StatusReply, error) {
	counts, err := s.store.Counts(ctx)
	if err != nil {
		return nil, rpc.Internal(err)
	}
	byState := map[protocol.JobState]int{}
	for st, n := range counts {
		byState[wireState(st)] = n
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

// job looks up one job of owner ("": any, for admins) for a client, as it
// travels to a session whose end-to-end hash is hash (viewFor).
func (s *Server) job(ctx context.Context, owner, hash, id string) (*protocol.JobInfo, error) {
	j, pos, err := s.lookup(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	info := viewFor(jobInfo(j), j, hash)
	info.Position = pos
	if j.State == jobs.Queued {
		info.WaitReason = s.pool.waitReason()
	}
	s.withDelivery(ctx, info)
	info.Detail = s.jobDetail(j)
	return info, nil
}

// lookup reads one job a client asks for, with its queue position (1-based
// when it is queued, else 0). A job id that is not valid or not known, or
// a job of another identity than owner ("" is an admin, who sees every
// job), is the same not_found error.
func (s *Server) lookup(ctx context.Context, owner, id string) (*jobs.Job, int, error) {
	if !jobs.ValidID(id) {
		return nil, 0, protocol.Errorf(protocol.CodeNotFound, "no job %q", rpc.Truncate(id, 64))
	}
	// The job and its queue position are two reads: a job claimed between
	// them would show as queued at position 0, so read it again then.
	for try := 0; ; try++ {
		j, err := s.store.Get(ctx, id)
		if errors.Is(err, jobs.ErrNotFound) || err == nil && owner != "" && j.Identity != owner {
			return nil, 0, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
		}
		if err != nil {
			return nil, 0, rpc.Internal(err)
		}
		if j.State != jobs.Queued {
			return j, 0, nil
		}
		pos, err := s.store.QueuePosition(ctx, id)
		if err != nil {
			return nil, 0, rpc.Internal(err)
		}
		if pos > 0 || try == 2 {
			return j, pos, nil
		}
	}
}

// queue lists the jobs of owner ("": every job, for admins), with their
// places in the whole queue.
func (s *Server) queue(ctx context.Context, owner, hash string, finishedSince time.Time) (*protocol.QueueReply, error) {
	list, err := s.store.List(ctx, jobs.ListOptions{IncludeFinishedSince: finishedSince, Limit: 1000, Identity: owner})
	if err != nil {
		return nil, rpc.Internal(err)
	}
	var positions map[string]int
	if owner != "" {
		// Places in the whole queue: a number, nothing of the others.
		if positions, err = s.store.QueuePositions(ctx, owner); err != nil {
			return nil, rpc.Internal(err)
		}
	}
	q := &protocol.QueueReply{Jobs: []protocol.JobInfo{}}
	pos := 0
	for _, j := range list {
		info := viewFor(jobInfo(j), j, hash)
		if j.State == jobs.Queued {
			pos++
			info.Position = pos
			if positions != nil {
				info.Position = positions[j.ID]
			}
		}
		if j.State == jobs.Succeeded && s.pacs.enabled() {
			s.withDelivery(ctx, info)
		}
		q.Jobs = append(q.Jobs, *info)
	}
	// Jobs with long file lists fill a message sooner: the finished ones
	// at the end go first.
	protocol.FitQueue(q)
	return q, nil
}

// sendEvents streams the state of owner's job to the client until it ends.
func (s *Server) sendEvents(ctx context.Context, c *secure.Conn, owner, hash, id string) error {
	var lastState jobs.State
	lastPos, lastWhy := 0, ""
	first := true
	for {
		wake, seen := s.changed.mark() // before reading, so no change is missed
		j, pos, err := s.lookup(ctx, owner, id)
		if err != nil {
			return err
		}
		why := ""
		if j.State == jobs.Queued {
			why = s.pool.waitReason()
		}
		if first || j.State != lastState || pos != lastPos || why != lastWhy {
			info := viewFor(jobInfo(j), j, hash)
			info.Position, info.WaitReason = pos, why
			s.armWrite(c)
			if err := protocol.WriteMessage(c, protocol.TypeEvent, protocol.Event{Job: *info}); err != nil {
				return err
			}
			first = false
			lastState, lastPos, lastWhy = j.State, pos, why
		}
		if j.State.Terminal() {
			return nil
		}
		// Read the job again at once when a change may concern it, and
		// when jobs left the queue (so a queued one moved forward) after
		// positionSettle, which gathers the moves of a busy queue into one
		// reading.
		queued := j.State == jobs.Queued
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
