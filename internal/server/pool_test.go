package server_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// switchSampler reports a machine that is out of memory or fine, as the
// test sets it, and counts its readings.
type switchSampler struct {
	mu       sync.Mutex
	overload bool
	n        int
}

func (s *switchSampler) set(overload bool) {
	s.mu.Lock()
	s.overload = overload
	s.mu.Unlock()
}

func (s *switchSampler) readings() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *switchSampler) Sample(context.Context) (server.Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if s.overload {
		return server.Reading{CPUPercent: 5, AvailableBytes: 10 << 20}, nil
	}
	return server.Reading{CPUPercent: 5, AvailableBytes: 64 << 30}, nil
}

// gateServer starts a server with one worker whose resource gate reads
// sampler and wants 100 MB of available memory, checked every second.
func gateServer(t *testing.T, sampler server.Sampler) *servertest.Server {
	t.Helper()
	return servertest.Start(t, servertest.Options{
		Extra: map[string]string{
			"MAX_CONCURRENT_JOBS":             "1",
			"MIN_AVAILABLE_MEMORY_MB":         "100",
			"RESOURCE_CHECK_INTERVAL_SECONDS": "1",
		},
		Server: server.Options{Sampler: sampler},
	})
}

// adminCall sends one admin request on a new admin session and decodes
// the reply.
func adminCall(t *testing.T, ctx context.Context, s *servertest.Server, typ protocol.Type, body any, want protocol.Type, reply any) {
	t.Helper()
	c, err := rawDial(ctx, s.AdminAddr().String(), "", mustKey(t, s.AdminKey), secure.RoleAdmin)
	if err != nil {
		t.Fatalf("admin dial: %v", err)
	}
	defer c.Close()
	m, err := request(c, typ, body)
	if err != nil {
		t.Fatalf("admin %s: %v", typ, err)
	}
	if err := m.Decode(want, reply); err != nil {
		t.Fatalf("admin %s reply: %v", typ, err)
	}
}

func workers(t *testing.T, ctx context.Context, s *servertest.Server) protocol.WorkersReply {
	t.Helper()
	var w protocol.WorkersReply
	adminCall(t, ctx, s, protocol.TypeAdminWorkers, protocol.Empty{}, protocol.TypeAdminWorkersReply, &w)
	return w
}

// logCount counts the log records whose message starts with msg.
func logCount(t *testing.T, s *servertest.Server, msg string) int {
	t.Helper()
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `"msg":"`+msg)
}

// waitPaused waits until the pool reports its one worker paused for
// memory, and returns that report.
func waitPaused(t *testing.T, ctx context.Context, s *servertest.Server) protocol.WorkersReply {
	t.Helper()
	var w protocol.WorkersReply
	servertest.Eventually(t, pollTimeout, "the pool reports its worker paused", func() bool {
		w = workers(t, ctx, s)
		return w.Paused && len(w.Workers) == 1 && w.Workers[0].State == "paused"
	})
	if !strings.Contains(w.PauseReason, "MIN_AVAILABLE_MEMORY_MB") {
		t.Errorf("pause reason %q does not name MIN_AVAILABLE_MEMORY_MB", w.PauseReason)
	}
	return w
}

// TestPoolGateHoldsAndResumes: with the injected reading over the limit a
// submitted job stays queued and the pool says why; once the reading is
// fine, the job starts and succeeds by itself. The pause and the resume
// are each logged once.
func TestPoolGateHoldsAndResumes(t *testing.T) {
	ctx := testContext(t)
	sampler := &switchSampler{overload: true}
	s := gateServer(t, sampler)
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "a.7", []byte("raw data"))

	waitPaused(t, ctx, s)
	// Several more readings: the worker has checked again a few times,
	// and the job is still waiting.
	n := sampler.readings()
	servertest.Eventually(t, pollTimeout, "three more readings", func() bool { return sampler.readings() >= n+3 })
	j, err := c.Job(ctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != "queued" {
		t.Fatalf("job under a paused pool is %s, want queued", j.State)
	}
	if w := workers(t, ctx, s); !w.Paused || w.Workers[0].JobID != "" {
		t.Errorf("workers while paused = %+v", w)
	}

	sampler.set(false)
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job after the resume: %s (%s), want succeeded", j.State, j.Error)
	}
	servertest.Eventually(t, pollTimeout, "the worker is idle again", func() bool {
		w := workers(t, ctx, s)
		return !w.Paused && len(w.Workers) == 1 && w.Workers[0].State == "idle"
	})
	if p, r := logCount(t, s, "workers paused"), logCount(t, s, "workers resumed"); p != 1 || r != 1 {
		t.Errorf("log has %d pause and %d resume records, want 1 and 1", p, r)
	}
}

// TestPoolNotPausedWhenQueueEmpty: a pause ends when there is nothing left
// to hold back. Cancelling the only waiting job leaves the worker idle, and
// the pool is then not reported paused (it used to stay "paused" beside an
// idle worker until the next job arrived).
func TestPoolNotPausedWhenQueueEmpty(t *testing.T) {
	ctx := testContext(t)
	sampler := &switchSampler{overload: true}
	s := gateServer(t, sampler)
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "a.7", []byte("raw data"))
	waitPaused(t, ctx, s)

	var rep protocol.CancelReply
	adminCall(t, ctx, s, protocol.TypeAdminCancel, protocol.JobRef{JobID: job.JobID}, protocol.TypeAdminCancelReply, &rep)
	if rep.State != "cancelled" {
		t.Fatalf("cancel = %+v", rep)
	}
	var w protocol.WorkersReply
	servertest.Eventually(t, pollTimeout, "the worker is idle", func() bool {
		w = workers(t, ctx, s)
		return len(w.Workers) == 1 && w.Workers[0].State == "idle"
	})
	if w.Paused || w.PauseReason != "" {
		t.Errorf("with an empty queue and an idle worker, workers = %+v; want not paused", w)
	}
	var st protocol.AdminStatus
	adminCall(t, ctx, s, protocol.TypeAdminStatus, protocol.Empty{}, protocol.TypeAdminStatusReply, &st)
	if st.Workers.Paused {
		t.Errorf("admin status reports the pool paused with an empty queue: %+v", st.Workers)
	}
	// The machine is still short of memory: a new job waits again, and
	// the pool says so.
	job2 := submitOne(t, ctx, c, "b.7", []byte("raw data"))
	waitPaused(t, ctx, s)
	sampler.set(false)
	if j := waitDone(t, ctx, c, job2.JobID); j.State != "succeeded" {
		t.Fatalf("second job: %s (%s), want succeeded", j.State, j.Error)
	}
}
