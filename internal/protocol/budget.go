package protocol

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// MessageBudget is the default size of a Budget: the bytes of large
// control messages (over MaxUnbudgetedMessage) a server, or a relay, holds
// at once while it reads and decodes them, whichever sessions they come
// from: eight messages of the largest size. A message is decoded in
// place, so it costs its size plus its decoded value (at most a few times
// its size: see checkJSON's caps).
const MessageBudget = 8 * MaxMessageSize

// MaxUnbudgetedMessage is the size up to which a message is read without
// taking from a Budget: every request but a submission of many files is
// smaller, so sessions that hold the budget (sending large messages
// slowly) cannot stop status requests, waits, fetches and small
// submissions. What such messages hold together is bounded by the
// connection caps (listen.MaxConns of them at a time).
const MaxUnbudgetedMessage = 64 << 10

// ErrBusy is returned by Budget.ReadMessage when the budget stayed spent
// by other sessions' messages for as long as the budget waits. The
// message's body was not read, so the stream is out of step: the peer is
// told to try again and the session ends.
var ErrBusy = errors.New("too many large control messages are being read at once")

// Budget bounds the memory that control messages hold together: each
// large message takes its announced length from the budget before its
// body is read, and gives it back once it is decoded (Message.Decode) or dropped
// (Message.Release). A message that does not fit waits, first come first
// served, up to the budget's wait; then ReadMessage fails with ErrBusy.
// It is safe for concurrent use.
type Budget struct {
	size int64
	wait time.Duration

	mu      sync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are taken for the waiter
}

// NewBudget returns a budget of size bytes (at least MaxMessageSize, so
// that any message fits alone) whose readers wait at most wait for room.
func NewBudget(size int64, wait time.Duration) *Budget {
	return &Budget{size: max(size, MaxMessageSize), wait: wait}
}

// Size is the budget's size in bytes.
func (b *Budget) Size() int64 { return b.size }

// Used is the number of bytes taken now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// acquire takes n bytes, waiting for room until ctx ends.
func (b *Budget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.size-b.used >= n {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-w.ready:
		// Taken for us just as ctx ended: keep it.
		b.mu.Unlock()
		return nil
	default:
	}
	front := b.waiters.Front() == e
	b.waiters.Remove(e)
	if front {
		// Waiters behind this one may fit now.
		b.grant()
	}
	b.mu.Unlock()
	return ctx.Err()
}

// release gives n bytes back.
func (b *Budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.used < 0 {
		panic("protocol: budget released more than it lent")
	}
	b.grant()
}

// grant hands room to waiters in order, as long as the first one fits.
// b.mu is held.
func (b *Budget) grant() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if b.size-b.used < w.n {
			return
		}
		b.used += w.n
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// hold is a message's share of a budget, given back once.
type hold struct {
	b    *Budget
	n    int64
	once sync.Once
}

func (h *hold) release() {
	if h != nil {
		h.once.Do(func() { h.b.release(h.n) })
	}
}

// ReadMessage reads one control message as the package's ReadMessage does,
// under the budget: once the length is read and checked, a message over
// MaxUnbudgetedMessage takes that many bytes from the budget (waiting as long as the budget's wait, or
// until ctx ends, for room), and reads the body into one buffer of exactly
// that size. The message holds its share until Decode or Release is
// called; on error nothing is held. A nil budget reads without one.
func (b *Budget) ReadMessage(ctx context.Context, r io.Reader) (Message, error) {
	if b == nil {
		return ReadMessage(r)
	}
	n, err := readLength(r)
	if err != nil {
		return Message{}, err
	}
	if n <= MaxUnbudgetedMessage {
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return Message{}, err
		}
		return parseMessage(body)
	}
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	err = b.acquire(wctx, int64(n))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return Message{}, ctx.Err()
		}
		return Message{}, fmt.Errorf("%w (waited %v for room for %d bytes)", ErrBusy, b.wait, n)
	}
	h := &hold{b: b, n: int64(n)}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		h.release()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	m, err := parseMessage(body)
	if err != nil {
		h.release()
		return Message{}, err
	}
	m.hold = h
	return m, nil
}

// Release gives the message's share of its budget back (see
// Budget.ReadMessage). It may be called more than once, also on copies of
// the message; Decode calls it. A message read without a budget holds
// nothing.
func (m Message) Release() { m.hold.release() }
