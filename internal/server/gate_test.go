package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSampler returns the readings a test sets.
type fakeSampler struct {
	mu  sync.Mutex
	r   Reading
	err error
	n   int
}

func (f *fakeSampler) set(r Reading, err error) {
	f.mu.Lock()
	f.r, f.err = r, err
	f.mu.Unlock()
}

func (f *fakeSampler) Sample(context.Context) (Reading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return f.r, f.err
}

func TestGate(t *testing.T) {
	const gib = 1 << 30
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	fs := &fakeSampler{}
	// A zero interval makes every check take a fresh reading.
	g := newGate(fs, 75, 500<<20, 0, log)
	steps := []struct {
		r       Reading
		err     error
		ok      bool
		reason  string
		logWant string
	}{
		{Reading{CPUPercent: 10, AvailableBytes: 8 * gib}, nil, true, "", ""},
		{Reading{CPUPercent: 90, AvailableBytes: 8 * gib}, nil, false, "CPU load 90% is above MAX_CPU_LOAD_PERCENT (75%)", "workers paused"},
		{Reading{CPUPercent: 95, AvailableBytes: 8 * gib}, nil, false, "CPU load 95%", ""},
		{Reading{CPUPercent: 10, AvailableBytes: 100 << 20}, nil, false, "available memory 100 MB is below MIN_AVAILABLE_MEMORY_MB (500 MB)", ""},
		{Reading{CPUPercent: 10, AvailableBytes: 8 * gib}, nil, true, "", "workers resumed"},
		{Reading{}, errors.New("no /proc"), true, "", ""}, // unreadable: do not hold jobs
	}
	for i, st := range steps {
		fs.set(st.r, st.err)
		logBuf.Reset()
		ok, reason := g.check(context.Background())
		if ok != st.ok || !strings.Contains(reason, st.reason) || (st.reason == "" && reason != "") {
			t.Errorf("step %d: check = %v, %q; want %v, %q", i, ok, reason, st.ok, st.reason)
		}
		if paused, _ := g.paused(); paused == ok {
			t.Errorf("step %d: paused() = %v after check = %v", i, paused, ok)
		}
		if st.logWant != "" && !strings.Contains(logBuf.String(), st.logWant) {
			t.Errorf("step %d: log %q, want %q", i, logBuf.String(), st.logWant)
		}
		if st.logWant == "" && logBuf.Len() != 0 {
			t.Errorf("step %d: logged %q, want nothing (a state is logged once, when it changes)", i, logBuf.String())
		}
	}
	// MAX_CPU_LOAD_PERCENT = 100 never pauses for CPU.
	g100 := newGate(fs, 100, 0, 0, log)
	fs.set(Reading{CPUPercent: 100, AvailableBytes: gib}, nil)
	if ok, r := g100.check(context.Background()); !ok {
		t.Errorf("gate at 100%% paused: %s", r)
	}
	// Readings are shared between workers for a while.
	gs := newGate(fs, 75, 0, 10*time.Second, log)
	fs.n = 0
	for range 10 {
		gs.check(context.Background())
	}
	if fs.n != 1 {
		t.Errorf("10 checks within the interval took %d readings, want 1", fs.n)
	}
}
