package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/process"

	"github.com/recon-mri/recon/internal/protocol"
)

// sampleEvery is how often the gate refreshes its reading in the
// background; CPU load is averaged over the time between two readings.
const sampleEvery = time.Second

// Reading is one sample of the machine's load.
type Reading struct {
	// CPUPercent is the load of every process but this server, all cores,
	// 0–100, averaged over a short window: the server's own work
	// (receiving uploads, hashing, sending results) is not counted against
	// it. A reconstruction script runs in processes of its own, so running
	// jobs are counted.
	CPUPercent     float64
	AvailableBytes uint64 // memory available to new processes
}

// Sampler reads the machine's load. The server uses the operating system's
// figures (NewSystemSampler); tests inject their own.
type Sampler interface {
	Sample(ctx context.Context) (Reading, error)
}

// CPUTimes reads the CPU time of the whole machine so far, in seconds
// summed over all cores: busy and in total (busy plus idle).
type CPUTimes func(ctx context.Context) (busy, total float64, err error)

// NewSystemSampler returns the sampler of a server: available memory from
// the operating system, and the CPU load of the other processes — the
// machine's busy time (machine, or the operating system's figures when
// nil) less this process's own CPU time, over the time between two
// readings. A reading costs a few small reads of /proc and never waits.
func NewSystemSampler(machine CPUTimes) Sampler {
	if machine == nil {
		machine = systemCPUTimes
	}
	return &systemSampler{machine: machine}
}

func systemCPUTimes(ctx context.Context) (busy, total float64, err error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil || len(ts) == 0 {
		return 0, 0, fmt.Errorf("read CPU load: %w", err)
	}
	t := ts[0]
	// Guest time is already counted in User and Nice.
	total = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return total - t.Idle - t.Iowait, total, nil
}

// selfCPUTime is this process's CPU time so far (user and system, all its
// threads), in seconds.
func selfCPUTime(ctx context.Context) (float64, error) {
	p, err := process.NewProcessWithContext(ctx, int32(os.Getpid()))
	if err != nil {
		return 0, fmt.Errorf("read own CPU time: %w", err)
	}
	t, err := p.TimesWithContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("read own CPU time: %w", err)
	}
	return t.User + t.System, nil
}

// systemSampler: see NewSystemSampler.
type systemSampler struct {
	machine CPUTimes

	mu                  sync.Mutex
	lastBusy, lastTotal float64
	lastSelf            float64
	have                bool
}

func (s *systemSampler) Sample(ctx context.Context) (Reading, error) {
	busy, total, err := s.machine(ctx)
	if err != nil {
		return Reading{}, err
	}
	self, err := selfCPUTime(ctx)
	if err != nil {
		return Reading{}, err
	}
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return Reading{}, fmt.Errorf("read memory: %w", err)
	}
	r := Reading{AvailableBytes: vm.Available}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.have {
		if dt := total - s.lastTotal; dt > 0 {
			others := (busy - s.lastBusy) - (self - s.lastSelf)
			r.CPUPercent = min(max(100*others/dt, 0), 100)
		}
	}
	s.lastBusy, s.lastTotal, s.lastSelf, s.have = busy, total, self, true
	return r, nil
}

// gate decides whether a worker may take a job: not while CPU load is above
// MAX_CPU_LOAD_PERCENT or available memory below MIN_AVAILABLE_MEMORY_MB.
// One reading serves all workers for a check interval's worth of time (at
// most a second), and a pause and a resume are each logged once.
type gate struct {
	sampler  Sampler
	maxCPU   float64
	minMem   uint64
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	last     Reading
	lastErr  error
	lastAt   time.Time
	isPaused bool
	reason   string
	short    string // the reason as a waiting client reads it
}

func newGate(s Sampler, maxCPU int, minMem int64, interval time.Duration, log *slog.Logger) *gate {
	return &gate{sampler: s, maxCPU: float64(maxCPU), minMem: uint64(max(minMem, 0)), interval: interval, log: log}
}

// run refreshes the reading every sampleEvery until ctx ends, so CPU load
// is averaged over a short window and a check never waits for a reading.
func (g *gate) run(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		r, err := g.sampler.Sample(ctx)
		g.mu.Lock()
		g.last, g.lastErr, g.lastAt = r, err, time.Now()
		g.mu.Unlock()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// check reports whether a job may start, taking a reading itself when the
// last one is older than the check interval (or a second).
func (g *gate) check(ctx context.Context) (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.lastAt) >= min(g.interval, 2*sampleEvery) || g.lastAt.IsZero() {
		g.last, g.lastErr = g.sampler.Sample(ctx)
		g.lastAt = time.Now()
	}
	var reason, short string
	switch {
	case g.lastErr != nil:
		// A machine whose load cannot be read is not held up by it.
		reason = ""
	case g.maxCPU < 100 && g.last.CPUPercent > g.maxCPU:
		reason = fmt.Sprintf("CPU load %.0f%% is above MAX_CPU_LOAD_PERCENT (%.0f%%)", g.last.CPUPercent, g.maxCPU)
		short = fmt.Sprintf("CPU load %.0f%% > %.0f%%", g.last.CPUPercent, g.maxCPU)
	case g.last.AvailableBytes < g.minMem:
		reason = fmt.Sprintf("available memory %d MB is below MIN_AVAILABLE_MEMORY_MB (%d MB)", g.last.AvailableBytes>>20, g.minMem>>20)
		short = fmt.Sprintf("available memory %d MB < %d MB", g.last.AvailableBytes>>20, g.minMem>>20)
	}
	switch {
	case reason != "" && !g.isPaused:
		g.log.Warn("workers paused: no new job starts until the machine has room", "reason", reason,
			"recheck_seconds", g.interval.Seconds())
	case reason == "" && g.isPaused:
		g.log.Info("workers resumed", "cpu_percent", g.last.CPUPercent, "available_memory_mb", g.last.AvailableBytes>>20)
	}
	g.isPaused, g.reason, g.short = reason != "", reason, short
	return reason == "", reason
}

func (g *gate) paused() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.isPaused, g.reason
}

// shortReason is why the gate is paused, in a few words for a waiting
// client ("CPU load 86% > 75%"), or "".
func (g *gate) shortReason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.short
}

// resources reports the last reading against the thresholds, taking one
// if none was taken yet.
func (g *gate) resources(ctx context.Context) protocol.Resources {
	g.mu.Lock()
	if g.lastAt.IsZero() {
		g.last, g.lastErr = g.sampler.Sample(ctx)
		g.lastAt = time.Now()
	}
	defer g.mu.Unlock()
	r := protocol.Resources{
		CPUPercent:           g.last.CPUPercent,
		MaxCPUPercent:        int(g.maxCPU),
		AvailableMemoryMB:    int64(g.last.AvailableBytes >> 20),
		MinAvailableMemoryMB: int64(g.minMem >> 20),
		CheckedAt:            g.lastAt.UTC(),
	}
	if g.lastErr != nil {
		r.Error = g.lastErr.Error()
	}
	return r
}
