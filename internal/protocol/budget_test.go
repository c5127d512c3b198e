package protocol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// maxFrame is a frame of a message of exactly MaxMessageSize bytes.
func maxFrame(t *testing.T) []byte {
	t.Helper()
	const head, tail = `{"type":"status","body":{"k":"`, `"}}`
	f := frame(head + strings.Repeat("v", MaxMessageSize-len(head)-len(tail)) + tail)
	if n := binary.BigEndian.Uint32(f); n != MaxMessageSize {
		t.Fatalf("frame of %d bytes", n)
	}
	return f
}

// midFrame is a frame of a status message just over MaxUnbudgetedMessage:
// the smallest that takes from a budget.
func midFrame() []byte {
	return frame(`{"type":"status"}` + strings.Repeat(" ", MaxUnbudgetedMessage))
}

// waitWaiters waits until n readers wait for room in b.
func waitWaiters(t *testing.T, b *Budget, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := b.waiters.Len()
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d readers wait for room, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBudgetHoldsUntilDecoded reads messages under a budget of two
// maximal messages: each holds its announced length until it is decoded
// or released (once, whatever is called after), a third waits for room
// and gets it once one is decoded, and a reader that waits longer than
// the budget's wait gets ErrBusy without its body being read.
func TestBudgetHoldsUntilDecoded(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := NewBudget(2*MaxMessageSize, 200*time.Millisecond)
	f := maxFrame(t)
	m1, err := b.ReadMessage(ctx, bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := b.ReadMessage(ctx, bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Used(); got != 2*MaxMessageSize {
		t.Fatalf("two messages hold %d bytes, want %d", got, 2*MaxMessageSize)
	}

	// A third message waits, and its body is not read meanwhile.
	r3 := bytes.NewReader(f)
	got := make(chan error, 1)
	go func() {
		m, err := b.ReadMessage(ctx, r3)
		if err == nil {
			m.Release()
		}
		got <- err
	}()
	waitWaiters(t, b, 1)
	if r3.Len() != len(f)-4 {
		t.Fatalf("%d bytes of the waiting message were read", len(f)-4-r3.Len())
	}
	if err := m1.Decode(TypeStatus, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting message, once there is room: %v", err)
	}
	m1.Release() // again, after Decode: nothing more is given back
	if got := b.Used(); got != MaxMessageSize {
		t.Fatalf("budget used %d, want %d", got, MaxMessageSize)
	}

	// With m2 held, a message that does not fit waits the budget's wait,
	// then gets ErrBusy; its body stays unread.
	b1 := NewBudget(MaxMessageSize, 200*time.Millisecond)
	h, err := b1.ReadMessage(ctx, bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	r4 := bytes.NewReader(f)
	start := time.Now()
	if _, err := b1.ReadMessage(ctx, r4); !errors.Is(err, ErrBusy) {
		t.Fatalf("ReadMessage on a spent budget = %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("ErrBusy after %v, before the budget's wait", waited)
	}
	if r4.Len() != len(f)-4 {
		t.Errorf("%d bytes of the refused message were read", len(f)-4-r4.Len())
	}
	h.Release()
	m2.Release()
	if b.Used() != 0 || b1.Used() != 0 {
		t.Errorf("budgets hold %d and %d bytes after every release", b.Used(), b1.Used())
	}
}

// TestBudgetGivesBackOnError checks that a message that fails to arrive or
// is refused holds nothing, that a small message is read without taking
// from the budget, and that a reader whose context ends while it waits
// gets the context's error and lets the next waiter in.
func TestBudgetGivesBackOnError(t *testing.T) {
	t.Parallel()
	b := NewBudget(MaxMessageSize, time.Minute)
	f := maxFrame(t)
	if _, err := b.ReadMessage(t.Context(), bytes.NewReader(f[:1000])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated message: %v", err)
	}
	if _, err := b.ReadMessage(t.Context(), bytes.NewReader(frame(`{"type":"status","x":1}`))); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("bad message: %v", err)
	}
	if b.Used() != 0 {
		t.Fatalf("budget holds %d bytes after failed reads", b.Used())
	}

	h, err := b.ReadMessage(t.Context(), bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	// A small message does not take from the budget: it is read even now.
	m, err := b.ReadMessage(t.Context(), bytes.NewReader(frame(`{"type":"status"}`)))
	if err != nil {
		t.Fatalf("a small message with the budget spent: %v", err)
	}
	m.Release()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := b.ReadMessage(ctx, bytes.NewReader(midFrame())); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting reader whose context ends: %v", err)
	}
	h.Release()
	m, err = b.ReadMessage(t.Context(), bytes.NewReader(midFrame()))
	if err != nil {
		t.Fatalf("after the waiter left: %v", err)
	}
	m.Release()
	if b.Used() != 0 {
		t.Fatalf("budget holds %d bytes", b.Used())
	}
}

// TestBudgetFirstComeFirstServed checks that a large waiter is not
// overtaken by smaller budgeted messages that would fit: they queue
// behind it.
func TestBudgetFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	b := NewBudget(MaxMessageSize, time.Minute)
	small := midFrame()
	h, err := b.ReadMessage(t.Context(), bytes.NewReader(small))
	if err != nil {
		t.Fatal(err)
	}
	big := make(chan error, 1)
	f := maxFrame(t)
	go func() {
		m, err := b.ReadMessage(t.Context(), bytes.NewReader(f))
		if err == nil {
			m.Release()
		}
		big <- err
	}()
	waitWaiters(t, b, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := b.ReadMessage(ctx, bytes.NewReader(small)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a small message overtook a waiting large one: %v", err)
	}
	h.Release()
	if err := <-big; err != nil {
		t.Fatal(err)
	}
}
