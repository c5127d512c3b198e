package server_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/shirou/gopsutil/v4/process"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// fixedSampler always reads the same.
type fixedSampler struct{ r server.Reading }

func (f fixedSampler) Sample(context.Context) (server.Reading, error) { return f.r, nil }

// TestWaitReasonCPU: a job held back by the CPU check says so, with the
// reading and the limit, in the job a client reads.
func TestWaitReasonCPU(t *testing.T) {
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{
		Extra: map[string]string{
			"MAX_CONCURRENT_JOBS":             "1",
			"MAX_CPU_LOAD_PERCENT":            "75",
			"MIN_AVAILABLE_MEMORY_MB":         "0",
			"RESOURCE_CHECK_INTERVAL_SECONDS": "1",
		},
		Server: server.Options{Sampler: fixedSampler{server.Reading{CPUPercent: 86, AvailableBytes: 64 << 30}}},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "a.7", []byte("raw data"))
	const want = "workers paused, CPU load 86% > 75%"
	j := waitJob(t, ctx, c, job.JobID, "it says why it waits", func(j *client.Job) bool { return j.WaitReason != "" })
	if j.State != client.StateQueued || j.Position != 1 || j.WaitReason != want {
		t.Errorf("job = %s (position %d): %q; want queued (position 1): %q", j.State, j.Position, j.WaitReason, want)
	}
}

// TestWaitReasonBusy: a job queued behind a running one on a one-worker
// server says that the worker is busy; once running, it has no reason.
func TestWaitReasonBusy(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: releaseScript(dir),
		Extra:  map[string]string{"MAX_CONCURRENT_JOBS": "1"},
	})
	c := s.Dial(t)
	first := submitOne(t, ctx, c, "a.7", []byte("raw data"))
	waitJob(t, ctx, c, first.JobID, "running", func(j *client.Job) bool { return j.State == client.StateRunning })
	second := submitOne(t, ctx, c, "b.7", []byte("raw data"))
	j := waitJob(t, ctx, c, second.JobID, "it says why it waits", func(j *client.Job) bool { return j.WaitReason != "" })
	if j.WaitReason != "the only worker is busy" {
		t.Errorf("job behind a running one: %q, want %q", j.WaitReason, "the only worker is busy")
	}
	release(t, dir, "all")
	if j := waitDone(t, ctx, c, second.JobID); j.State != client.StateSucceeded || j.WaitReason != "" {
		t.Errorf("second job: %s, wait reason %q; want succeeded and none", j.State, j.WaitReason)
	}
}

// soloMachine is a machine on which this process is the only thing that
// works: its busy CPU time is this process's own (/proc/self/stat, in the
// clock ticks /proc/stat counts in too), and it is
// idle for only a millisecond between two readings, so any work of the
// process reads as a load far above MAX_CPU_LOAD_PERCENT — unless the
// sampler leaves the process's own work out.
type soloMachine struct {
	mu   sync.Mutex
	idle float64
}

func (m *soloMachine) times(context.Context) (busy, total float64, err error) {
	p, err := process.NewProcess(int32(os.Getpid()))
	if err != nil {
		return 0, 0, err
	}
	ts, err := p.Times()
	if err != nil {
		return 0, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.idle += 0.001
	busy = ts.User + ts.System
	return busy, busy + m.idle, nil
}

// TestUploadAloneDoesNotPauseWorkers: the server's own work — a real
// upload of 32 MiB, received, decrypted, hashed and written — does not
// count against MAX_CPU_LOAD_PERCENT. On a machine where nothing else
// works, the job that upload makes starts without the workers pausing.
// (The sampler counted the server's own work before: its CPU load read
// near 100% here and the pool paused once.)
func TestUploadAloneDoesNotPauseWorkers(t *testing.T) {
	ctx := testContext(t)
	m := &soloMachine{}
	s := servertest.Start(t, servertest.Options{
		Extra: map[string]string{
			"MAX_CONCURRENT_JOBS":             "1",
			"MAX_CPU_LOAD_PERCENT":            "50",
			"MIN_AVAILABLE_MEMORY_MB":         "0",
			"RESOURCE_CHECK_INTERVAL_SECONDS": "1",
		},
		Server: server.Options{Sampler: server.NewSystemSampler(m.times)},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "big.7", randomBytes(t, 32<<20))
	if j := waitDone(t, ctx, c, job.JobID); j.State != client.StateSucceeded {
		t.Fatalf("job: %s (%s), want succeeded", j.State, j.Error)
	}
	if n := logCount(t, s, "workers paused"); n != 0 {
		t.Errorf("the log has %d 'workers paused' records; the server's own upload paused its workers", n)
	}
}
