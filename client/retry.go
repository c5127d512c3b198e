package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// Limits of the retry loops.
const (
	// DefaultReconnectDelay is the first wait of a Backoff whose Delay is 0.
	DefaultReconnectDelay = time.Second
	// MaxReconnectDelay caps the doubling waits of a Backoff.
	MaxReconnectDelay = 30 * time.Second
	// AuthRetries is how many of a Backoff's retries DialRetrying (and
	// the reconnects of Submit, WaitRetrying and FetchRetrying) spend on
	// a server that closed the session without answering: the server may
	// have been busy, which passes, but the same silence means a wrong key
	// or a refused address, which do not, and should not wait long to be
	// reported.
	AuthRetries = 2
)

// Backoff says how a client tries again after a failure that may pass (a
// server that is restarting, a connection that broke, a relay's backend
// that is down): up to Retries more times, waiting Delay before the first
// retry and twice as long before each next one, up to MaxReconnectDelay.
type Backoff struct {
	// Retries is the number of retries after the first attempt: 0 (or
	// less) means none, so the zero Backoff tries once. DefaultReconnects
	// is the number the recon command uses.
	Retries int
	// Delay is the wait before the first retry; 0 means
	// DefaultReconnectDelay.
	Delay time.Duration
	// OnRetry, if not nil, is called before each wait with the number of
	// the retry to come (from 1), the error that caused it, and the wait.
	OnRetry func(retry int, err error, wait time.Duration)
}

func (b Backoff) retries() int { return max(b.Retries, 0) }

// run calls f until it succeeds, fails with an error that again rejects, ctx
// ends, or the retries are used up, waiting as b says between calls; it
// returns f's last error. before, if not nil, runs after each wait, before
// the next call.
func (b Backoff) run(ctx context.Context, f func() error, again func(error) bool, before func()) error {
	delay := b.Delay
	if delay <= 0 {
		delay = DefaultReconnectDelay
	}
	for retry := 1; ; retry++ {
		err := f()
		if err == nil || retry > b.retries() || ctx.Err() != nil || !again(err) {
			return err
		}
		if b.OnRetry != nil {
			b.OnRetry(retry, err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		delay = min(2*delay, MaxReconnectDelay)
		if before != nil {
			before()
		}
	}
}

// DialRetrying is Dial, tried again as b says while the server cannot be
// reached: the connection is refused, reset or times out, as when the
// server is starting or restarting. A handshake the server closes without
// answering (ErrAuth: a wrong key or role, a refused address, or a busy
// server) is tried again at most AuthRetries times. A bad key in cfg, or
// ctx ending, is not retried.
func DialRetrying(ctx context.Context, cfg Config, b Backoff) (*Client, error) {
	var c *Client
	err := b.run(ctx, func() (err error) {
		c, err = Dial(ctx, cfg)
		return err
	}, refusalsCounted(Resumable), nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// refusalsCounted is again, except that a session the server closed
// without answering (ErrClosedUnanswered: a busy server over its caps, or
// a key or address it does not take) is tried again at most AuthRetries
// times, whatever again says.
func refusalsCounted(again func(error) bool) func(error) bool {
	refused := 0
	return func(err error) bool {
		if errors.Is(err, secure.ErrClosedUnanswered) {
			refused++
			return refused <= AuthRetries
		}
		return again(err)
	}
}

// Retryable reports whether a failed Wait or Fetch may succeed if made
// again on a new session: the connection broke or stalled (see Resumable),
// or a relay lost or cannot reach the backend holding the job (code
// unavailable), which may come back. The job and its results stay on the
// server meanwhile.
func Retryable(err error) bool {
	return Resumable(err) || protocol.IsCode(err, protocol.CodeUnavailable)
}

// WaitRetrying is Wait that, when it fails with a Retryable error,
// reconnects and follows the job again, as b says: through a server that
// restarts, a broken connection, or a relay whose backend is down for a
// while. onEvent may see a state again after a reconnect.
func (c *Client) WaitRetrying(ctx context.Context, id string, onEvent func(Job), b Backoff) (*Job, error) {
	var j *Job
	err := c.retrying(ctx, b, func() (err error) {
		j, err = c.Wait(ctx, id, onEvent)
		return err
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// FetchRetrying is Fetch that, when it fails with a Retryable error,
// reconnects and downloads the results again from the start, as b says. A
// failed attempt leaves nothing in dir; the results stay on the server
// until a fetch has them all.
func (c *Client) FetchRetrying(ctx context.Context, id, dir string, opts *FetchOptions, b Backoff) (*Job, []LocalFile, error) {
	var j *Job
	var files []LocalFile
	err := c.retrying(ctx, b, func() (err error) {
		j, files, err = c.Fetch(ctx, id, dir, opts)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return j, files, nil
}

// retrying runs f until it succeeds or fails with an error that is not
// Retryable, opening a new session before each retry. A new session that
// cannot be opened (the server or relay is still down) is the next
// attempt's error.
func (c *Client) retrying(ctx context.Context, b Backoff, f func() error) error {
	again := refusalsCounted(Retryable)
	return b.run(ctx, f, func(err error) bool { return !c.isClosed() && again(err) }, func() {
		if err := c.redial(ctx); err != nil && !errors.Is(err, ErrClosed) {
			c.mu.Lock()
			c.broken = fmt.Errorf("%w: %w", ErrClosed, err)
			c.mu.Unlock()
		}
	})
}
