package rpc

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// Send writes one request of type t and reads the one reply, undecoded:
// for a request whose reply may be of more than one type. A wire error
// comes as the reply (its Decode returns the *protocol.Error).
func Send(rw io.ReadWriter, t protocol.Type, body any) (protocol.Message, error) {
	if err := protocol.WriteMessage(rw, t, body); err != nil {
		return protocol.Message{}, err
	}
	return protocol.ReadMessage(rw)
}

// Exchange writes one request of type t and decodes its one reply, of type
// want, into reply. A wire error is returned as a *protocol.Error.
func Exchange(rw io.ReadWriter, t protocol.Type, body any, want protocol.Type, reply any) error {
	m, err := Send(rw, t, body)
	if err != nil {
		return err
	}
	return m.Decode(want, reply)
}

// Call is Exchange on c bounded by ctx: its deadline, if it has one, bounds
// the exchange, and c is closed when ctx ends, which unblocks it.
func Call(ctx context.Context, c *secure.Conn, t protocol.Type, body any, want protocol.Type, reply any) error {
	defer bound(ctx, c)()
	return Exchange(c, t, body, want, reply)
}

// bound bounds the use of c by ctx until the function it returns is
// called.
func bound(ctx context.Context, c *secure.Conn) (release func()) {
	dl, ok := ctx.Deadline()
	if ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return func() {
		stop()
		if ok {
			c.SetDeadline(time.Time{})
		}
	}
}

// Client is a session on which requests with one reply each are made one
// at a time, as the server's and the relay's administrators make them. It
// is safe for concurrent use.
type Client struct {
	mu   sync.Mutex
	conn *secure.Conn
}

// Dial opens a session with addr.
func Dial(ctx context.Context, addr string, cfg secure.Config) (*Client, error) {
	c, err := secure.Dial(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c}, nil
}

// Call makes one request and decodes its reply (see the function Call).
func (c *Client) Call(ctx context.Context, t protocol.Type, body any, want protocol.Type, reply any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Call(ctx, c.conn, t, body, want, reply)
}

// Stream makes one request whose reply is a run of messages of type want:
// each is decoded into reply, then more says whether another follows.
func (c *Client) Stream(ctx context.Context, t protocol.Type, body any, want protocol.Type, reply any, more func() bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer bound(ctx, c.conn)()
	if err := protocol.WriteMessage(c.conn, t, body); err != nil {
		return err
	}
	for {
		m, err := protocol.ReadMessage(c.conn)
		if err != nil {
			return err
		}
		if err := m.Decode(want, reply); err != nil {
			return err
		}
		if !more() {
			return nil
		}
	}
}

// Close ends the session.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.CloseWrite()
	return c.conn.Close()
}
