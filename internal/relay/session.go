package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// session is a client's connection as a handler sees it.
type session = rpc.Session[*clientSession]

// serveClient answers a client's requests in sequence until it closes the
// session or breaks the protocol.
//
// The session acts for the identity of the client's key; the backends
// that take the relay's act_as see only that identity's jobs.
func (r *Relay) serveClient(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	if c.OldProtocol() {
		rpc.TellToUpgrade(c, log, "relay")
		return
	}
	cs := r.clients.add(listen.NewConnID(), c, r.keyring)
	if cs == nil {
		log.Info("session closed: its key was removed by a reload during its handshake")
		return
	}
	defer r.clients.remove(cs)
	r.clientMux.Serve(ctx, c, log.With("identity", cs.identity), cs)
}

// clientRequests is the table of a client session's requests.
func (r *Relay) clientRequests() *rpc.Mux[*clientSession] {
	m := &rpc.Mux[*clientSession]{Name: "relay", Unknown: "request", Budget: r.msgs,
		IdleTimeout: r.opts.IdleTimeout, EndLevel: slog.LevelInfo,
		Begin: func(cs *clientSession, t protocol.Type) { cs.begin(string(t)) },
		End:   (*clientSession).end,
	}
	rpc.Reply(m, protocol.TypeStatus, protocol.TypeStatusReply, func(ctx context.Context, _ *session, _ *protocol.Empty) (*protocol.StatusReply, error) {
		return r.status(ctx), nil
	})
	rpc.Reply(m, protocol.TypeHello, protocol.TypeHelloReply, func(ctx context.Context, s *session, req *protocol.Hello) (*protocol.HelloReply, error) {
		return r.hello(s.State, req)
	})
	rpc.Handle(m, protocol.TypeJobStatus, func(ctx context.Context, s *session, ref *protocol.JobRef) error {
		return r.jobStatus(ctx, s.Conn, s.State, ref.JobID)
	})
	rpc.Reply(m, protocol.TypeQueue, protocol.TypeQueueReply, func(ctx context.Context, s *session, _ *protocol.Empty) (*protocol.QueueReply, error) {
		return r.queue(ctx, s.State.identity, s.State.hash)
	})
	rpc.Reply(m, protocol.TypeCancel, protocol.TypeCancelReply, func(ctx context.Context, s *session, ref *protocol.JobRef) (*protocol.CancelReply, error) {
		return r.cancel(ctx, s.State, ref.JobID)
	})
	rpc.Handle(m, protocol.TypeSubmit, func(ctx context.Context, s *session, sub *protocol.Submit) error {
		s.State.transferred = true
		return r.submit(ctx, s.Conn, s.State, sub, s.Log)
	})
	rpc.Handle(m, protocol.TypeWait, func(ctx context.Context, s *session, ref *protocol.JobRef) error {
		return r.wait(ctx, s.Conn, s.State, ref.JobID)
	})
	rpc.Handle(m, protocol.TypeFetch, func(ctx context.Context, s *session, ref *protocol.JobRef) error {
		s.State.transferred = true
		return r.fetch(ctx, s.Conn, s.State, ref.JobID, s.Log)
	})
	return m
}

// status is the relay's own status for clients: its version and uptime,
// and the job counts and workers of its healthy backends, asked now.
func (r *Relay) status(ctx context.Context) *protocol.StatusReply {
	st := &protocol.StatusReply{
		Version:       r.opts.Version,
		Protocol:      protocol.Version,
		UptimeSeconds: time.Since(r.started).Seconds(),
		StartedAt:     r.started.UTC(),
		Jobs:          map[protocol.JobState]int{},
	}
	up, _ := r.pool.split()
	replies := make([]*protocol.StatusReply, len(up))
	r.eachBackend(ctx, up, r.pool.checkTimeout(), func(ctx context.Context, i int, b *backend) {
		start := time.Now()
		s, err := r.pool.status(ctx, b)
		if err != nil {
			r.pool.failed(ctx, b, err)
			return
		}
		r.pool.markUp(b, s, start)
		replies[i] = s
	})
	for _, s := range replies {
		if s == nil {
			continue
		}
		for k, n := range s.Jobs {
			st.Jobs[k] += n
		}
		st.MaxWorkers += s.MaxWorkers
	}
	return st
}

// eachBackend runs f for every backend in parallel, with a context bounded
// by timeout, and waits for all.
func (r *Relay) eachBackend(ctx context.Context, bs []*backend, timeout time.Duration, f func(ctx context.Context, i int, b *backend)) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx, i, b)
		}()
	}
	wg.Wait()
}

// route finds the backend holding job id: from the route store, or, for a
// job the relay has not placed (submitted to a backend directly), by
// asking every healthy backend as identity. A job whose backend is down is
// a clear CodeUnavailable error.
func (r *Relay) route(ctx context.Context, identity, id string) (*backend, error) {
	if !jobs.ValidID(id) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", rpc.Truncate(id, 64))
	}
	addr, owner, err := r.routes.job(ctx, id)
	if errors.Is(err, errNoRoute) || err == nil && owner != "" && owner != identity {
		// Another identity's job is looked for as one the relay does not
		// know: its backend, up or down, is not named.
		return r.discover(ctx, identity, id)
	}
	if err != nil {
		return nil, rpc.Internal(err)
	}
	b := r.pool.get(addr)
	if b == nil {
		return nil, protocol.Errorf(protocol.CodeUnavailable, "job %s is on backend %s, which is no longer in the relay's BACKEND_SERVERS", id, addr)
	}
	if !r.pool.isHealthy(b) {
		return nil, downError(id, b.addr)
	}
	return b, nil
}

func downError(id, addr string) error {
	return protocol.Errorf(protocol.CodeUnavailable, "job %s is on backend %s, which is down; try again when it is back", id, addr)
}

// discover asks every healthy backend for job id of identity and records
// the one that has it.
func (r *Relay) discover(ctx context.Context, identity, id string) (*backend, error) {
	up, down := r.pool.split()
	found := make([]bool, len(up))
	r.eachBackend(ctx, up, backendReplyTimeout, func(ctx context.Context, i int, b *backend) {
		c, err := r.pool.dial(ctx, b, identity, "")
		if err != nil {
			return
		}
		defer c.Close()
		var j protocol.JobInfo
		err = roundTrip(ctx, c, protocol.TypeJobStatus, protocol.JobRef{JobID: id}, protocol.TypeJob, &j)
		if err != nil && !isWireError(err) {
			r.pool.failed(ctx, b, err)
		}
		found[i] = err == nil && j.JobID == id
	})
	for i, ok := range found {
		if ok {
			if err := r.routes.putJob(ctx, id, up[i].addr, identity); err != nil {
				return nil, rpc.Internal(err)
			}
			return up[i], nil
		}
	}
	if len(down) > 0 {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q on the backends that are up (down: %s)", id, strings.Join(down, ", "))
	}
	return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
}

// open connects to the backend holding job id, for identity; a failure is
// a clear CodeUnavailable error.
func (r *Relay) open(ctx context.Context, b *backend, identity, hash, id string) (*secure.Conn, error) {
	c, err := r.pool.dial(ctx, b, identity, hash)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isWireError(err) {
			return nil, err
		}
		return nil, protocol.Errorf(protocol.CodeUnavailable, "job %s is on backend %s, which cannot be reached; try again when it is back", id, b.addr)
	}
	return c, nil
}

// lost turns a broken session to the backend holding job id into a clear
// error, and marks the backend down.
func (r *Relay) lost(ctx context.Context, b *backend, id string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.pool.failed(ctx, b, err)
	return protocol.Errorf(protocol.CodeUnavailable, "lost the connection to backend %s, which holds job %s; try again when it is back", b.addr, id)
}

func (r *Relay) jobStatus(ctx context.Context, c *secure.Conn, cs *clientSession, id string) error {
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
	var j protocol.JobInfo
	if err := roundTrip(ctx, bc, protocol.TypeJobStatus, protocol.JobRef{JobID: id}, protocol.TypeJob, &j); err != nil {
		if isWireError(err) {
			return err
		}
		return r.lost(ctx, b, id, err)
	}
	bc.CloseWrite()
	j.Backend = b.addr
	return protocol.WriteMessage(c, protocol.TypeJob, j)
}

// wait forwards the backend's events about job id until one is terminal.
func (r *Relay) wait(ctx context.Context, c *secure.Conn, cs *clientSession, id string) error {
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
	if err := protocol.WriteMessage(bc, protocol.TypeWait, protocol.JobRef{JobID: id}); err != nil {
		return r.lost(ctx, b, id, err)
	}
	for {
		m, err := protocol.ReadMessage(bc)
		if err != nil {
			return r.lost(ctx, b, id, err)
		}
		var ev protocol.Event
		if err := m.Decode(protocol.TypeEvent, &ev); err != nil {
			if isWireError(err) {
				return err
			}
			return rpc.Internal(fmt.Errorf("backend %s: %w", b.addr, err))
		}
		ev.Job.Backend = b.addr
		r.armWrite(c)
		if err := protocol.WriteMessage(c, protocol.TypeEvent, ev); err != nil {
			return err // the client is gone
		}
		if ev.Job.Terminal() {
			bc.CloseWrite()
			return nil
		}
	}
}

// queue lists identity's jobs on every healthy backend, each labelled with
// its backend: running first, then queued, then finished, each group in
// submission order. Backends that are down are named in Unavailable. hash
// is the client session's (its jobs' files carry BLAKE3 digests in a
// BLAKE3 session, as on a server).
func (r *Relay) queue(ctx context.Context, identity, hash string) (*protocol.QueueReply, error) {
	up, down := r.pool.split()
	lists := make([][]protocol.JobInfo, len(up))
	failed := make([]bool, len(up))
	r.eachBackend(ctx, up, backendReplyTimeout, func(ctx context.Context, i int, b *backend) {
		c, err := r.pool.dial(ctx, b, identity, hash)
		if err != nil {
			failed[i] = true
			return
		}
		defer c.Close()
		var q protocol.QueueReply
		if err := roundTrip(ctx, c, protocol.TypeQueue, protocol.Empty{}, protocol.TypeQueueReply, &q); err != nil {
			if !isWireError(err) {
				r.pool.failed(ctx, b, err)
			}
			failed[i] = true
			return
		}
		c.CloseWrite()
		for j := range q.Jobs {
			q.Jobs[j].Backend = b.addr
		}
		lists[i] = q.Jobs
	})
	reply := &protocol.QueueReply{Jobs: []protocol.JobInfo{}, Unavailable: down}
	for i, l := range lists {
		if failed[i] {
			reply.Unavailable = append(reply.Unavailable, up[i].addr)
		}
		reply.Jobs = append(reply.Jobs, l...)
	}
	sort.SliceStable(reply.Jobs, func(i, j int) bool {
		a, b := stateRank(reply.Jobs[i].State), stateRank(reply.Jobs[j].State)
		if a != b {
			return a < b
		}
		return reply.Jobs[i].SubmittedAt.Before(reply.Jobs[j].SubmittedAt)
	})
	fitQueue(reply)
	return reply, nil
}

// cancel forwards the owner's cancel of job id to its backend.
func (r *Relay) cancel(ctx context.Context, cs *clientSession, id string) (*protocol.CancelReply, error) {
	b, err := r.route(ctx, cs.identity, id)
	if err != nil {
		return nil, err
	}
	cs.about(id, b.addr)
	bc, err := r.open(ctx, b, cs.identity, cs.hash, id)
	if err != nil {
		return nil, err
	}
	defer bc.Close()
	var rep protocol.CancelReply
	// A running job's cancel waits for its script to end (up to a minute).
	cctx, stop := context.WithTimeout(ctx, 2*time.Minute)
	defer stop()
	if err := rpc.Call(cctx, bc, protocol.TypeCancel, protocol.JobRef{JobID: id}, protocol.TypeCancelReply, &rep); err != nil {
		if isWireError(err) {
			return nil, err
		}
		return nil, r.lost(ctx, b, id, err)
	}
	bc.CloseWrite()
	return &rep, nil
}

func stateRank(s protocol.JobState) int {
	switch s {
	case protocol.StateRunning:
		return 0
	case protocol.StateQueued:
		return 1
	}
	return 2
}

// fitQueue drops jobs from the end of the list (finished ones come last)
// until the reply fits in one control message.
func fitQueue(q *protocol.QueueReply) { protocol.FitQueue(q) }

// hello answers a client's hello. The relay hashes nothing: it passes file
// bytes and their file_done through, so the session's hash is the one
// the backend checks. It chooses BLAKE3 (when offered before SHA-256)
// only while every backend speaks protocol 3, since a job may go to any
// of them; its sessions to backends for this client's transfers then say
// hello with BLAKE3 (pool.dial). Otherwise SHA-256.
func (r *Relay) hello(cs *clientSession, req *protocol.Hello) (*protocol.HelloReply, error) {
	if err := protocol.CheckHello(req, cs.hello, cs.transferred); err != nil {
		return nil, err
	}
	hash := protocol.ChooseHash(req.Hashes)
	if hash != protocol.HashSHA256 && !r.pool.allSpeak(3) {
		hash = protocol.HashSHA256
	}
	cs.hello, cs.hash = true, hash
	return &protocol.HelloReply{Protocol: protocol.Version, Hash: hash}, nil
}
