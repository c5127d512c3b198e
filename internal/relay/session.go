package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// errSessionOver ends a client session without an error reply: the byte
// stream is out of step (a file stream broke midway) or the client is gone.
var errSessionOver = errors.New("session over")

// fatalErr marks an error after which the client session cannot go on: the
// client gets the error, then the connection closes.
type fatalErr struct{ err error }

func (e *fatalErr) Error() string { return e.err.Error() }
func (e *fatalErr) Unwrap() error { return e.err }

// internalErr is logged in full and reported to the client without detail.
type internalErr struct{ err error }

func (e *internalErr) Error() string { return e.err.Error() }
func (e *internalErr) Unwrap() error { return e.err }

// serveClient answers a client's requests in sequence until it closes the
// session or breaks the protocol.
func (r *Relay) serveClient(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	cs := r.clients.add(listen.NewConnID(), c.RemoteAddr().String())
	defer r.clients.remove(cs)
	for {
		m, err := r.msgs.ReadMessage(ctx, c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Info("session ended", "err", err)
			}
			if pe := messageError(err); pe != nil {
				r.armWrite(c)
				protocol.WriteError(c, pe)
			}
			return
		}
		r.armWrite(c)
		cs.begin(string(m.Type))
		err = r.handleClient(ctx, c, cs, m, log)
		m.Release() // if the handler did not decode it
		cs.end()
		if err == nil {
			continue
		}
		var pe *protocol.Error
		if errors.As(err, &pe) {
			log.Info("request refused", "request", string(m.Type), "code", string(pe.Code), "err", pe.Message)
			r.armWrite(c)
			if protocol.WriteError(c, pe) != nil {
				return
			}
			var fe *fatalErr
			if pe.Code == protocol.CodeBadRequest || errors.As(err, &fe) {
				return
			}
			continue
		}
		var ie *internalErr
		if errors.As(err, &ie) {
			log.Error("request failed", "request", string(m.Type), "err", err)
			r.armWrite(c)
			protocol.WriteError(c, protocol.Errorf(protocol.CodeInternal, "internal relay error; see the relay log"))
			return
		}
		if !errors.Is(err, errSessionOver) && ctx.Err() == nil {
			log.Info("session ended", "request", string(m.Type), "err", err)
		}
		return
	}
}

func (r *Relay) handleClient(ctx context.Context, c *secure.Conn, cs *clientSession, m protocol.Message, log *slog.Logger) error {
	switch m.Type {
	case protocol.TypeStatus:
		if err := m.Decode(m.Type, &protocol.Empty{}); err != nil {
			return badRequest(err)
		}
		return protocol.WriteMessage(c, protocol.TypeStatusReply, r.status(ctx))
	case protocol.TypeJobStatus:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		return r.jobStatus(ctx, c, cs, ref.JobID)
	case protocol.TypeQueue:
		if err := m.Decode(m.Type, &protocol.Empty{}); err != nil {
			return badRequest(err)
		}
		q, err := r.queue(ctx)
		if err != nil {
			return err
		}
		return protocol.WriteMessage(c, protocol.TypeQueueReply, q)
	case protocol.TypeSubmit:
		var sub protocol.Submit
		if err := m.Decode(m.Type, &sub); err != nil {
			return badRequest(err)
		}
		return r.submit(ctx, c, cs, &sub, log)
	case protocol.TypeWait:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		return r.wait(ctx, c, cs, ref.JobID)
	case protocol.TypeFetch:
		var ref protocol.JobRef
		if err := m.Decode(m.Type, &ref); err != nil {
			return badRequest(err)
		}
		return r.fetch(ctx, c, cs, ref.JobID, log)
	default:
		return protocol.Errorf(protocol.CodeBadRequest, "unknown request %q", truncate(string(m.Type), 40))
	}
}

// messageError is the wire error for a control message that could not be
// read because it is malformed or too large, or nil for any other error.
func messageError(err error) *protocol.Error {
	switch {
	case errors.Is(err, protocol.ErrMessageTooLarge):
		return protocol.Errorf(protocol.CodeTooLarge, "%v", err)
	case errors.Is(err, protocol.ErrBadMessage):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, protocol.ErrBusy):
		return protocol.Errorf(protocol.CodeUnavailable, "relay busy: %v; try again", err)
	}
	return nil
}

func badRequest(err error) error {
	return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// status is the relay's own status for clients: its version and uptime,
// and the job counts and workers of its healthy backends, asked now.
func (r *Relay) status(ctx context.Context) *protocol.StatusReply {
	st := &protocol.StatusReply{
		Version:       r.opts.Version,
		Protocol:      protocol.Version,
		UptimeSeconds: time.Since(r.started).Seconds(),
		StartedAt:     r.started.UTC(),
		Jobs:          map[string]int{},
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
// asking every healthy backend. A job whose backend is down is a clear
// CodeUnavailable error.
func (r *Relay) route(ctx context.Context, id string) (*backend, error) {
	if !jobs.ValidID(id) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", truncate(id, 64))
	}
	addr, err := r.routes.job(ctx, id)
	if errors.Is(err, errNoRoute) {
		return r.discover(ctx, id)
	}
	if err != nil {
		return nil, &internalErr{err}
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

// discover asks every healthy backend for job id and records the one that
// has it.
func (r *Relay) discover(ctx context.Context, id string) (*backend, error) {
	up, down := r.pool.split()
	found := make([]bool, len(up))
	r.eachBackend(ctx, up, backendReplyTimeout, func(ctx context.Context, i int, b *backend) {
		c, err := r.pool.dial(ctx, b)
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
			if err := r.routes.putJob(ctx, id, up[i].addr); err != nil {
				return nil, &internalErr{err}
			}
			return up[i], nil
		}
	}
	if len(down) > 0 {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q on the backends that are up (down: %s)", id, strings.Join(down, ", "))
	}
	return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
}

// open connects to the backend holding job id; a failure is a clear
// CodeUnavailable error.
func (r *Relay) open(ctx context.Context, b *backend, id string) (*secure.Conn, error) {
	c, err := r.pool.dial(ctx, b)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
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
	b, err := r.route(ctx, id)
	if err != nil {
		return err
	}
	cs.about(id, b.addr)
	bc, err := r.open(ctx, b, id)
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
	b, err := r.route(ctx, id)
	if err != nil {
		return err
	}
	cs.about(id, b.addr)
	bc, err := r.open(ctx, b, id)
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
			return &internalErr{fmt.Errorf("backend %s: %w", b.addr, err)}
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

// queue lists the jobs of every healthy backend, each labelled with its
// backend: running first, then queued, then finished, each group in
// submission order. Backends that are down are named in Unavailable.
func (r *Relay) queue(ctx context.Context) (*protocol.QueueReply, error) {
	up, down := r.pool.split()
	lists := make([][]protocol.JobInfo, len(up))
	failed := make([]bool, len(up))
	r.eachBackend(ctx, up, backendReplyTimeout, func(ctx context.Context, i int, b *backend) {
		c, err := r.pool.dial(ctx, b)
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

func stateRank(s string) int {
	switch s {
	case "running":
		return 0
	case "queued":
		return 1
	}
	return 2
}

// fitQueue drops jobs from the end of the list (finished ones come last)
// until the reply fits in one control message.
func fitQueue(q *protocol.QueueReply) { protocol.FitQueue(q) }
