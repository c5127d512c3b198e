package daemon

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testTimeout bounds each wait of a test.
const testTimeout = 10 * time.Second

// closer records its close.
type closer struct {
	name   string
	order  *[]string
	closed atomic.Bool
	err    error
}

func (c *closer) Close() error {
	c.closed.Store(true)
	*c.order = append(*c.order, c.name)
	return c.err
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("%s: not closed after %s", what, testTimeout)
	}
}

// TestShutdownReleasesAfterGoroutines: what is held is closed after every
// goroutine has ended, in the reverse order of Hold, and Shutdown returns
// what closing reported, also when called again.
func TestShutdownReleasesAfterGoroutines(t *testing.T) {
	l := New(nil, "test")
	var order []string
	lock := &closer{name: "lock", order: &order}
	store := &closer{name: "store", order: &order, err: errors.New("disk gone")}
	l.Hold("lock", lock)
	l.Hold("store", store)
	var sawOpen atomic.Bool
	if err := l.Go("worker", func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // still using the store after ctx ended
		sawOpen.Store(!store.closed.Load() && !lock.closed.Load())
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for range 2 {
		err := l.Shutdown(ctx)
		if err == nil || !strings.Contains(err.Error(), "close store: disk gone") {
			t.Fatalf("Shutdown = %v, want the store's close error", err)
		}
	}
	if !sawOpen.Load() {
		t.Error("something held was closed while a goroutine still ran")
	}
	if strings.Join(order, ",") != "store,lock" {
		t.Errorf("closed in order %v, want store then lock", order)
	}
	waitClosed(t, l.Done(), "Done")
}

// TestShutdownTimesOut: when ctx ends before a goroutine does, Shutdown
// says so and names it, and what is held is still released once the
// goroutine ends; a later Shutdown waits again and then succeeds.
func TestShutdownTimesOut(t *testing.T) {
	l := New(nil, "test")
	var order []string
	lock := &closer{name: "lock", order: &order}
	l.Hold("lock", lock)
	release := make(chan struct{})
	if err := l.Go("stuck worker", func(ctx context.Context) { <-release }); err != nil {
		t.Fatal(err)
	}
	l.Go("quick worker", func(ctx context.Context) { <-ctx.Done() })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := l.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still running: stuck worker;") {
		t.Fatalf("Shutdown = %v, want a timeout naming the stuck worker only", err)
	}
	if lock.closed.Load() {
		t.Fatal("lock closed while a goroutine still runs")
	}
	close(release)
	// Released without another call.
	deadline := time.Now().Add(testTimeout)
	for !lock.closed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("lock not released after the goroutine ended")
		}
		time.Sleep(time.Millisecond)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), testTimeout)
	defer cancel2()
	if err := l.Shutdown(ctx2); err != nil {
		t.Fatalf("second Shutdown = %v, want nil", err)
	}
	if len(order) != 1 {
		t.Errorf("closed %v, want the lock once", order)
	}
}

// TestGoAfterShutdown: once shutdown has begun, Go runs nothing, Listen
// opens nothing and Hold closes what it is given.
func TestGoAfterShutdown(t *testing.T) {
	l := New(nil, "test")
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	err := l.Go("late", func(context.Context) { close(ran) })
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Go after Shutdown = %v, want ErrStopped", err)
	}
	ln, err := l.Listen("client", "127.0.0.1:0")
	if !errors.Is(err, ErrStopped) || ln != nil {
		t.Fatalf("Listen after Shutdown = %v, %v, want ErrStopped", ln, err)
	}
	var order []string
	c := &closer{name: "late", order: &order}
	if err := l.Hold("late", c); !errors.Is(err, ErrStopped) || !c.closed.Load() {
		t.Fatalf("Hold after Shutdown = %v (closed %v), want ErrStopped and closed", err, c.closed.Load())
	}
	select {
	case <-ran:
		t.Fatal("a goroutine started after Shutdown")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestListenersCloseFirst: a listener closes when shutdown begins, so an
// accept loop ends even when it does not watch ctx; its address stays
// known.
func TestListenersCloseFirst(t *testing.T) {
	l := New(nil, "test")
	ln, err := l.Listen("client", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Listen("client", "127.0.0.1:0"); err == nil {
		t.Fatal("a second listener of the same name was opened")
	}
	addr := ln.Addr()
	l.Go("accept", func(context.Context) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
	if got := l.Addr("client"); got == nil || got.String() != addr.String() {
		t.Errorf("Addr after Shutdown = %v, want %v", got, addr)
	}
	if l.Addr("admin") != nil {
		t.Error("Addr of a listener never opened is not nil")
	}
}

// TestStopFromInside: a goroutine may stop its own lifecycle; Done closes
// once every goroutine has ended.
func TestStopFromInside(t *testing.T) {
	l := New(nil, "test")
	l.Go("fatal", func(context.Context) { l.Stop() })
	l.Go("loop", func(ctx context.Context) { <-ctx.Done() })
	waitClosed(t, l.Done(), "Done")
}
