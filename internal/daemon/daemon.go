// Package daemon gives a long-running component (the server, the relay,
// the watch daemon as cmd/recon runs it) one lifecycle: it starts and owns
// every goroutine of the component, and what they use — listeners, the
// store, the state directory's lock — so that one Shutdown stops the
// goroutines, waits for them and releases the rest, in that order.
//
// The shape is nats-server's startGoRoutine: Go refuses once shutdown has
// begun, so no goroutine starts after Shutdown has counted them.
//
// Shutdown always releases what the lifecycle holds. When its ctx ends
// before the goroutines do, it returns the timeout (naming what still
// runs), and the release happens anyway, as soon as the last goroutine
// ends: a store is never closed under a goroutine that uses it, and a
// state lock is never kept by a component that has stopped.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
)

// ErrStopped is returned by Go, Listen and Hold once shutdown has begun.
var ErrStopped = errors.New("shutting down")

// Lifecycle owns a component's goroutines and what they hold. Create it
// with New. Its methods are safe for concurrent use.
type Lifecycle struct {
	log  *slog.Logger
	name string // "server", "relay": the release is logged as "<name> stopped"

	// ctx is the goroutines' context: it ends when shutdown begins. The
	// lifecycle owns it, as an errgroup owns the context it hands out.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	stopping  bool
	running   map[string]int          // goroutines by name, for a timed-out Shutdown
	listeners map[string]net.Listener // closed when shutdown begins
	held      []held                  // closed when the goroutines have ended
	wg        sync.WaitGroup

	done     chan struct{} // shutdown began and every goroutine has ended
	released chan struct{} // and then everything held was closed; err is set
	err      error
}

type held struct {
	name string
	c    io.Closer
}

// New returns a lifecycle that holds nothing and runs nothing yet. When
// the release is done it logs "<name> stopped" to log (nil: nothing).
func New(log *slog.Logger, name string) *Lifecycle {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Lifecycle{
		log:       log,
		name:      name,
		ctx:       ctx,
		cancel:    cancel,
		running:   map[string]int{},
		listeners: map[string]net.Listener{},
		done:      make(chan struct{}),
		released:  make(chan struct{}),
	}
}

// Context is the context the goroutines get: it ends when shutdown
// begins. Start code uses it for work done before the goroutines run.
func (l *Lifecycle) Context() context.Context { return l.ctx }

// Go runs fn in a goroutine the lifecycle waits for, with the lifecycle's
// context; name says what it is when Shutdown times out. Once shutdown has
// begun it runs nothing and returns ErrStopped.
func (l *Lifecycle) Go(name string, fn func(ctx context.Context)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return fmt.Errorf("start %s: %w", name, ErrStopped)
	}
	l.running[name]++
	l.wg.Add(1)
	go func() {
		defer l.exit(name)
		fn(l.ctx)
	}()
	return nil
}

func (l *Lifecycle) exit(name string) {
	l.mu.Lock()
	if l.running[name]--; l.running[name] == 0 {
		delete(l.running, name)
	}
	l.mu.Unlock()
	l.wg.Done()
}

// Listen opens a TCP listener on addr, called name, that is closed when
// shutdown begins, before the context is cancelled: its accept loop ends
// and no new session starts. A second listener of the same name is
// refused, and once shutdown has begun Listen opens nothing and returns
// ErrStopped.
func (l *Lifecycle) Listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopping:
		err = ErrStopped
	case l.listeners[name] != nil:
		err = fmt.Errorf("the %s listener is already open", name)
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	l.listeners[name] = ln
	return ln, nil
}

// Addr is the address of the listener called name (nil when there is
// none). It stays valid after the listener is closed.
func (l *Lifecycle) Addr(name string) net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ln := l.listeners[name]; ln != nil {
		return ln.Addr()
	}
	return nil
}

// Hold makes the lifecycle close c once shutdown has begun and every
// goroutine has ended; things held are closed in the reverse order of
// Hold. name says what c is in the error of a failed close. Once shutdown
// has begun, Hold closes c at once and returns ErrStopped.
func (l *Lifecycle) Hold(name string, c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		c.Close()
		return ErrStopped
	}
	l.held = append(l.held, held{name, c})
	return nil
}

// Stop begins shutdown without waiting: Go refuses from now on, the
// listeners close, the context is cancelled, and what is held is released
// as soon as every goroutine has ended. A goroutine may call it to stop
// its component. Calls after the first do nothing.
func (l *Lifecycle) Stop() {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return
	}
	l.stopping = true
	listeners, toRelease := slices.Collect(maps.Values(l.listeners)), l.held
	l.held = nil
	l.mu.Unlock()
	for _, ln := range listeners {
		ln.Close()
	}
	l.cancel()
	// The release waits for the goroutines, however long they take, so
	// that a Shutdown that gives up waiting still leaves nothing held.
	go l.release(toRelease)
}

func (l *Lifecycle) release(toRelease []held) {
	l.wg.Wait()
	close(l.done)
	var errs []error
	for _, h := range slices.Backward(toRelease) {
		if err := h.c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", h.name, err))
		}
	}
	l.err = errors.Join(errs...)
	l.log.Info(l.name + " stopped")
	close(l.released)
}

// Done is closed once shutdown has begun and every goroutine has ended.
func (l *Lifecycle) Done() <-chan struct{} { return l.done }

// Shutdown stops the component (see Stop) and waits until every goroutine
// has ended and everything held is closed, or until ctx ends. It returns
// what closing reported; when ctx ends first, it returns ctx's error and
// the names of the goroutines still running, and the release happens when
// they end. Safe to call more than once, also concurrently: each call
// waits, and once the release is done every call returns its result.
func (l *Lifecycle) Shutdown(ctx context.Context) error {
	l.Stop()
	select {
	case <-l.released:
		return l.err
	default:
	}
	select {
	case <-l.released:
		return l.err
	case <-ctx.Done():
		return fmt.Errorf("shutdown: %w (still running: %s; what they hold is released when they end)",
			ctx.Err(), l.stillRunning())
	}
}

func (l *Lifecycle) stillRunning() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := slices.Sorted(maps.Keys(l.running))
	for i, n := range names {
		if c := l.running[n]; c > 1 {
			names[i] = fmt.Sprintf("%s (%d)", n, c)
		}
	}
	if len(names) == 0 {
		return "nothing, closing"
	}
	return strings.Join(names, ", ")
}
