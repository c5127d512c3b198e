// Package client is the Go API of recon: it connects to a recon server (or
// relay) over the encrypted channel, submits raw-data files as jobs, follows
// them, and fetches their verified results.
//
// A Client holds one session and runs one request at a time; it is safe for
// concurrent use (requests are serialised), but for parallel transfers open
// several clients. Every method takes a context: when it ends, the request
// is abandoned and the session closed, so the Client must be re-dialled.
//
//	c, err := client.Dial(ctx, client.Config{Address: "recon-host:60000", Key: sharedKey})
//	if err != nil { ... }
//	defer c.Close()
//	job, err := c.Submit(ctx, []string{"P00000.7"}, &client.SubmitOptions{Options: map[string]string{"method": "pics"}})
//	job, err = c.Wait(ctx, job.JobID, nil)
//	job, files, err := c.Fetch(ctx, job.JobID, "images", nil)
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// Job describes a job as the server reports it: job_id, state, queue
// position, input files, options, times, exit code, error and result
// manifest.
type Job = protocol.JobInfo

// JobState is a job's state: queued, running, then one of the terminal
// states succeeded, failed and cancelled.
type JobState = protocol.JobState

// The states of a job.
const (
	StateQueued    = protocol.StateQueued
	StateRunning   = protocol.StateRunning
	StateSucceeded = protocol.StateSucceeded
	StateFailed    = protocol.StateFailed
	StateCancelled = protocol.StateCancelled
)

// FileSum is a file's name, size and SHA-256 (lower-case hex).
type FileSum = protocol.FileSum

// QueueReply is the answer to QueueReport: the jobs, and (through a relay)
// the backends that are down.
type QueueReply = protocol.QueueReply

// ServerStatus is the server's answer to Status.
type ServerStatus = protocol.StatusReply

// Error is an error reported by the server: a stable Code and a message.
type Error = protocol.Error

// Error codes the server may report (see Error).
const (
	CodeNotFound     = protocol.CodeNotFound
	CodeNotFinished  = protocol.CodeNotFinished
	CodeGone         = protocol.CodeGone
	CodeQueueFull    = protocol.CodeQueueFull
	CodeNoSpace      = protocol.CodeNoSpace
	CodeTooLarge     = protocol.CodeTooLarge
	CodeInvalidName  = protocol.CodeInvalidName
	CodeHashMismatch = protocol.CodeHashMismatch
	CodeBadRequest   = protocol.CodeBadRequest
	// CodeUnavailable comes from a relay: no backend is up, or the one
	// holding the job (or a submission it may have made a job of) is down.
	CodeUnavailable = protocol.CodeUnavailable
)

// IsCode reports whether err is a server error with the given code.
func IsCode(err error, code protocol.Code) bool { return protocol.IsCode(err, code) }

// ErrClosed is returned by requests on a closed or broken Client.
var ErrClosed = errors.New("client: connection closed")

// Config says where and how to connect.
type Config struct {
	// Address is the server's (or relay's) host:port.
	Address string
	// Key is the shared key (SHARED_KEY, or the relay's
	// SHARED_KEY_RELAY_TO_CLIENTS) in its text form.
	Key string
	// DialTimeout bounds connecting and the handshake (default
	// DefaultDialTimeout).
	DialTimeout time.Duration
	// IdleTimeout ends the session when the server sends nothing for this
	// long while an answer is awaited (default DefaultIdleTimeout): a
	// server or relay that hangs, or a network that drops the connection
	// silently, is an error rather than a wait for ever. A server sends a
	// waiting client its job's state at least every 30 s.
	IdleTimeout time.Duration
	// Hashes are the end-to-end hashes the client offers a server for
	// checking file bytes, preferred first (protocol version 3's hello);
	// nil means protocol.SupportedHashes(): BLAKE3, then SHA-256. With
	// []string{"sha256"} every file is checked with SHA-256, as with a
	// server of version 2. A result's SHA-256 is given either way.
	Hashes []string
}

// Defaults of Config.
const (
	// DefaultDialTimeout is the default of Config.DialTimeout. The recon
	// command bounds its admin connections by it too.
	DefaultDialTimeout = 15 * time.Second
	// DefaultIdleTimeout is the default of Config.IdleTimeout.
	DefaultIdleTimeout = 5 * time.Minute
)

// LoadConfig reads the client settings (SERVER_HOSTNAME, SERVER_PORT,
// SHARED_KEY) of a recon.opts file.
func LoadConfig(path string) (Config, []string, error) {
	c, warns, err := config.LoadClient(path)
	if err != nil {
		return Config{}, nil, err
	}
	var ws []string
	for _, w := range warns {
		ws = append(ws, w.String())
	}
	return Config{
		Address: net.JoinHostPort(c.Hostname, strconv.Itoa(c.Port)),
		Key:     c.SharedKey.Encode(),
	}, ws, nil
}

// Client is one session with a recon server. Submit may replace the
// session with a new one to resume a broken upload.
type Client struct {
	mu     sync.Mutex // one request at a time
	conn   *secure.Conn
	broken error
	closed bool // by Close: no redial
	cfg    Config
	key    keys.Key
	// hash is the end-to-end hash of the current session, chosen as it
	// opened (hello, sessionHash); noHello is set once the
	// server turned a hello down (protocol version 2): no session to it
	// says hello again.
	hash    string
	noHello bool
}

// Dial connects to the server and authenticates with the key. A wrong key
// fails here, with an error matching ErrAuth. Dial tries once; see
// DialRetrying for a server that may be starting or busy.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	k, err := keys.Parse(cfg.Key)
	if err != nil {
		return nil, &localError{fmt.Errorf("client: %w", err)}
	}
	c := &Client{cfg: cfg, key: k}
	if c.conn, err = c.dial(ctx); err != nil {
		return nil, err
	}
	if err := c.hello(ctx); err != nil {
		c.conn.Close()
		return nil, err
	}
	return c, nil
}

// hello chooses a new session's hash (sessionHash) as part of opening it:
// its answer is the first proof that the server kept the session (one
// that is over its caps closes it once the handshake is done), so a
// session it closes unanswered fails here, as a busy server, within the
// dial timeout.
func (c *Client) hello(ctx context.Context) error {
	timeout := c.cfg.DialTimeout
	if timeout == 0 {
		timeout = DefaultDialTimeout
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	_, err := c.sessionHash(ctx)
	stop()
	c.conn.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case closedUnanswered(err):
		return fmt.Errorf("connect to %s: %w (it closed the session after the handshake: %v)", c.cfg.Address, secure.ErrClosedUnanswered, err)
	}
	return err
}

// closedUnanswered reports whether err is a session's end by the peer: a
// close record, a connection that ended, was reset or closed.
func closedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// dial opens a new session with the configured server.
func (c *Client) dial(ctx context.Context) (*secure.Conn, error) {
	timeout := c.cfg.DialTimeout
	if timeout == 0 {
		timeout = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	idle := c.cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	conn, err := secure.Dial(dctx, c.cfg.Address, secure.Config{Key: c.key, Role: secure.RoleClient, HandshakeTimeout: timeout, IdleTimeout: idle})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.cfg.Address, err)
	}
	return conn, nil
}

// isClosed reports whether Close was called.
func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Reconnect replaces the session with a new one to the same server, for a
// Client whose connection broke (see Resumable): requests, Wait and Fetch
// can then be made again (a job's results stay on the server until a fetch
// is confirmed). A Client ended by Close cannot reconnect.
func (c *Client) Reconnect(ctx context.Context) error { return c.redial(ctx) }

// redial replaces a broken session with a new one. It fails on a Client
// that was closed.
func (c *Client) redial(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	c.conn.Close()
	c.conn, c.broken, c.hash = conn, nil, ""
	return c.hello(ctx)
}

// sessionHash returns the session's end-to-end hash, choosing it with a
// hello as the session opens (Dial, redial: hello): the hash checks the
// files of its transfers, and a session that chose BLAKE3 is shown the
// BLAKE3 of its jobs' files. A server of protocol version 2
// answers the hello with bad_request and closes the session: the client
// then dials a new one, which checks files with SHA-256. Called under c.mu.
func (c *Client) sessionHash(ctx context.Context) (string, error) {
	if c.hash != "" {
		return c.hash, nil
	}
	if c.noHello {
		c.hash = protocol.HashSHA256
		return c.hash, nil
	}
	offer := c.cfg.Hashes
	if offer == nil {
		offer = protocol.SupportedHashes()
	}
	var rep protocol.HelloReply
	err := rpc.Exchange(c.conn, protocol.TypeHello, protocol.Hello{Hashes: offer}, protocol.TypeHelloReply, &rep)
	if protocol.IsCode(err, protocol.CodeBadRequest) {
		conn, derr := c.dial(ctx)
		if derr != nil {
			return "", derr
		}
		c.conn.Close()
		c.conn, c.noHello, c.hash = conn, true, protocol.HashSHA256
		return c.hash, nil
	}
	if err != nil {
		return "", err
	}
	if !slices.Contains(offer, rep.Hash) || !protocol.KnownHash(rep.Hash) {
		return "", fmt.Errorf("server chose the hash %q, which the client did not offer", rpc.Truncate(rep.Hash, 20))
	}
	c.hash = rep.Hash
	return c.hash, nil
}

// ErrAuth matches the error of a failed handshake. A server refuses without
// a word, so the error names every cause it may have: a wrong key, a wrong
// port or role, an address the server does not allow, or a server too busy
// to take the connection (only this last one may pass; see DialRetrying).
var ErrAuth = secure.ErrAuth

// Close ends the session.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = ErrClosed
	}
	c.closed = true
	c.conn.CloseWrite()
	return c.conn.Close()
}

// do runs one request under the lock. If ctx ends meanwhile the connection
// is closed, which unblocks it; the client is then unusable. An error that
// is not a server error also leaves the client unusable, since the session
// may be out of step.
func (c *Client) do(ctx context.Context, f func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	err := f()
	if !stop() {
		c.broken = ErrClosed
		return ctx.Err()
	}
	var pe *protocol.Error
	if err != nil && (!errors.As(err, &pe) || pe.Code == protocol.CodeBadRequest) {
		// The session is out of step, or the server closes it after a bad
		// request: no further request can succeed on it.
		c.broken = fmt.Errorf("%w: %v", ErrClosed, err)
		c.conn.Close()
	}
	return err
}

// Status asks for the server's status.
func (c *Client) Status(ctx context.Context) (*ServerStatus, error) {
	var st ServerStatus
	err := c.do(ctx, func() error {
		return rpc.Exchange(c.conn, protocol.TypeStatus, protocol.Empty{}, protocol.TypeStatusReply, &st)
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// Job asks for one job's state. An unknown id gives an error with
// CodeNotFound.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	var j Job
	err := c.do(ctx, func() error {
		return rpc.Exchange(c.conn, protocol.TypeJobStatus, protocol.JobRef{JobID: id}, protocol.TypeJob, &j)
	})
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// CancelReply is the answer to Cancel: the job's state before and after.
type CancelReply = protocol.CancelReply

// Cancel cancels a job of this client's identity: a queued one at once, a
// running one by stopping its script (Cancel returns once it has ended, or
// after a minute with State still running). A job of another identity is
// CodeNotFound, as one that does not exist; a finished one is a conflict.
func (c *Client) Cancel(ctx context.Context, id string) (*CancelReply, error) {
	var rep CancelReply
	err := c.do(ctx, func() error {
		return rpc.Exchange(c.conn, protocol.TypeCancel, protocol.JobRef{JobID: id}, protocol.TypeCancelReply, &rep)
	})
	if err != nil {
		return nil, err
	}
	return &rep, nil
}

// Queue lists the jobs that have not finished, in queue order (running
// first), followed by those that finished in the last 24 hours.
func (c *Client) Queue(ctx context.Context) ([]Job, error) {
	q, err := c.QueueReport(ctx)
	if err != nil {
		return nil, err
	}
	return q.Jobs, nil
}

// QueueReport is Queue with what a relay adds: the backends that are down,
// whose jobs are missing from the list (QueueReply.Unavailable).
func (c *Client) QueueReport(ctx context.Context) (*QueueReply, error) {
	var q protocol.QueueReply
	err := c.do(ctx, func() error {
		return rpc.Exchange(c.conn, protocol.TypeQueue, protocol.Empty{}, protocol.TypeQueueReply, &q)
	})
	if err != nil {
		return nil, err
	}
	return &q, nil
}

// Wait follows a job until it ends and returns its final state. onEvent,
// if not nil, is called with every state the server reports (queued with
// its position, running, the end), and again now and then while nothing
// changes.
func (c *Client) Wait(ctx context.Context, id string, onEvent func(Job)) (*Job, error) {
	var last Job
	err := c.do(ctx, func() error {
		if err := protocol.WriteMessage(c.conn, protocol.TypeWait, protocol.JobRef{JobID: id}); err != nil {
			return err
		}
		for {
			m, err := protocol.ReadMessage(c.conn)
			if err != nil {
				return err
			}
			var ev protocol.Event
			if err := m.Decode(protocol.TypeEvent, &ev); err != nil {
				return err
			}
			last = ev.Job
			if onEvent != nil {
				onEvent(last)
			}
			if last.Terminal() {
				return nil
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return &last, nil
}
