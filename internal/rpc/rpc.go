// Package rpc is the request layer of the server and the relay: one loop
// that reads a peer's control messages in sequence, hands each to the
// handler registered for its type, arms the write deadline of each reply,
// turns a handler's error into what the peer may see, and logs with the
// session's logger (which carries its conn_id).
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// ErrSessionOver ends a session without an error reply: the byte stream
// is out of step or the peer is gone.
var ErrSessionOver = errors.New("session over")

// FatalError marks an error after which the session cannot go on, because
// the byte stream is no longer in step (a file stream failed midway): the
// peer gets the error, then the connection closes.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Fatal marks err as fatal to the session.
func Fatal(err error) error { return &FatalError{err} }

// InternalError is logged in full and reported to the peer without detail.
type InternalError struct{ Err error }

func (e *InternalError) Error() string { return e.Err.Error() }
func (e *InternalError) Unwrap() error { return e.Err }

// Internal marks err as a failure of this side, not of the request.
func Internal(err error) error { return &InternalError{err} }

// BadRequest is the wire error for a request that breaks the protocol.
func BadRequest(err error) error {
	return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
}

// MessageError is the wire error for a control message that could not be
// read because it is malformed or too large, or because the side (named
// name: "server", "relay") is out of message memory; nil for any other
// error (a broken connection, which cannot carry an answer).
func MessageError(err error, name string) *protocol.Error {
	switch {
	case errors.Is(err, protocol.ErrMessageTooLarge):
		return protocol.Errorf(protocol.CodeTooLarge, "%v", err)
	case errors.Is(err, protocol.ErrBadMessage):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, protocol.ErrBusy):
		return protocol.Errorf(protocol.CodeUnavailable, "%s busy: %v; try again", name, err)
	}
	return nil
}

// Truncate shortens a peer's string to n bytes for a message or a log.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Session is one peer's connection as a handler sees it, with the state S
// its service keeps per session.
type Session[S any] struct {
	Conn  *secure.Conn
	Log   *slog.Logger
	State S
	idle  time.Duration
}

// ArmWrite gives the peer the idle timeout to take the next message: a
// peer that stops reading cannot hold a session forever. Handlers that run
// long (uploads, events, results) call it before each write.
func (s *Session[S]) ArmWrite() {
	s.Conn.SetWriteDeadline(time.Now().Add(s.idle))
}

type handler[S any] func(context.Context, *Session[S], protocol.Message) error

// Mux serves the requests of one kind of session (a server's clients, a
// relay's administrators) with a handler per message type.
type Mux[S any] struct {
	// Name is how this side names itself to peers: "server" or "relay".
	Name string
	// Unknown names a request of a type with no handler in its error:
	// "request", "relay admin request".
	Unknown string
	// Budget bounds the memory of the messages being read.
	Budget *protocol.Budget
	// IdleTimeout is how long a peer has to take each reply.
	IdleTimeout time.Duration
	// EndLevel is the level at which a session that broke is logged.
	EndLevel slog.Level
	// Begin and End, when set, run around each request.
	Begin func(S, protocol.Type)
	End   func(S)
	// Check, when set, runs before the handler of each request of a known
	// type; an error refuses the request as the handler's would.
	Check func(context.Context, *Session[S], protocol.Message) error

	handlers map[protocol.Type]handler[S]
}

func (m *Mux[S]) add(t protocol.Type, h handler[S]) {
	if m.handlers == nil {
		m.handlers = map[protocol.Type]handler[S]{}
	}
	if _, dup := m.handlers[t]; dup {
		panic(fmt.Sprintf("rpc: two handlers for %q", t))
	}
	m.handlers[t] = h
}

// Handle registers h for requests of type t: the request is decoded into a
// Req (a body that does not decode is a bad request) and h answers it.
func Handle[S, Req any](m *Mux[S], t protocol.Type, h func(context.Context, *Session[S], *Req) error) {
	m.add(t, func(ctx context.Context, s *Session[S], msg protocol.Message) error {
		req := new(Req)
		if err := msg.Decode(t, req); err != nil {
			return BadRequest(err)
		}
		return h(ctx, s, req)
	})
}

// Reply registers h for requests of type t that have one reply, of type
// reply.
func Reply[S, Req, Rep any](m *Mux[S], t, reply protocol.Type, h func(context.Context, *Session[S], *Req) (Rep, error)) {
	Handle(m, t, func(ctx context.Context, s *Session[S], req *Req) error {
		rep, err := h(ctx, s, req)
		if err != nil {
			return err
		}
		s.ArmWrite() // the handler may have taken its time
		return protocol.WriteMessage(s.Conn, reply, rep)
	})
}

// Serve reads requests from c and hands each to its handler, until the
// peer closes the session, breaks the protocol or a request fails in a way
// the session cannot survive. A handler's *protocol.Error is sent to the
// peer; after a bad request or a FatalError the session closes. An
// InternalError is logged in full and reported without detail.
func (m *Mux[S]) Serve(ctx context.Context, c *secure.Conn, log *slog.Logger, state S) {
	s := &Session[S]{Conn: c, Log: log, State: state, idle: m.IdleTimeout}
	for {
		msg, err := m.Budget.ReadMessage(ctx, c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Log(ctx, m.EndLevel, "session ended", "err", err)
			}
			if pe := MessageError(err, m.Name); pe != nil {
				// The peer sent a message that is not one: say why, then
				// close.
				s.ArmWrite()
				protocol.WriteError(c, pe)
			}
			return
		}
		// Every reply must be read within the idle timeout; handlers that
		// run longer re-arm it.
		s.ArmWrite()
		if !m.serveOne(ctx, s, msg) {
			return
		}
	}
}

// serveOne answers one request and reports whether the session goes on.
func (m *Mux[S]) serveOne(ctx context.Context, s *Session[S], msg protocol.Message) bool {
	log := s.Log
	log.Debug("request", "request", string(msg.Type))
	h := m.handlers[msg.Type]
	var err error
	if h == nil {
		err = protocol.Errorf(protocol.CodeBadRequest, "unknown %s %q", m.Unknown, Truncate(string(msg.Type), 40))
	} else {
		if m.Begin != nil {
			m.Begin(s.State, msg.Type)
		}
		if m.Check != nil {
			err = m.Check(ctx, s, msg)
		}
		if err == nil {
			err = h(ctx, s, msg)
		}
		msg.Release() // if the handler did not decode it
		if m.End != nil {
			m.End(s.State)
		}
	}
	msg.Release()
	if err == nil {
		return true
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		log.Info("request refused", "request", string(msg.Type), "code", string(pe.Code), "err", pe.Message)
		s.ArmWrite()
		if protocol.WriteError(s.Conn, pe) != nil {
			return false
		}
		var fe *FatalError
		// A peer that breaks the protocol gets one answer, then the door.
		return pe.Code != protocol.CodeBadRequest && !errors.As(err, &fe)
	}
	var ie *InternalError
	if errors.As(err, &ie) {
		log.Error("request failed", "request", string(msg.Type), "err", err)
		s.ArmWrite()
		protocol.WriteError(s.Conn, protocol.Errorf(protocol.CodeInternal, "internal %s error; see the %s log", m.Name, m.Name))
		return false
	}
	if !errors.Is(err, ErrSessionOver) && ctx.Err() == nil {
		log.Log(ctx, m.EndLevel, "session ended", "request", string(msg.Type), "err", err)
	}
	return false
}

// TellToUpgrade answers the first request of a client of protocol version
// 1 (secure.Conn.OldProtocol) with an error that tells it to upgrade; name
// is "server" or "relay". The prototype's client prints it.
func TellToUpgrade(c *secure.Conn, log *slog.Logger, name string) {
	log.Info("client of protocol version 1 told to upgrade")
	msg, err := protocol.ReadMessage(c)
	if err != nil {
		return
	}
	msg.Release()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	protocol.WriteError(c, protocol.Errorf(protocol.CodeBadRequest,
		"this %s speaks recon protocol version %d and no longer serves version 1: upgrade recon on this client", name, secure.ProtocolVersion))
}
