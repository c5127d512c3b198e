package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/recon-mri/recon/internal/jobs"
)

// claimPool is a pool over a real job store holding one queued job, with
// two workers registered as run would (their goroutines are not started).
func claimPool(t *testing.T) (*pool, *jobs.Store, string, [2]*worker) {
	t.Helper()
	st, err := jobs.Open(filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	j, _, err := st.Create(t.Context(), &jobs.Job{Files: []jobs.File{{Name: "a.7", Size: 1, SHA256: "00"}}})
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(poolDeps{store: st}, 2, newGate(&fakeSampler{}, 100, 0, 0, slog.New(slog.DiscardHandler)))
	var ws [2]*worker
	for i := range ws {
		ws[i] = &worker{id: i + 1, state: workerIdle, stop: make(chan struct{})}
		p.workers[ws[i].id] = ws[i]
	}
	p.nextID = 2
	return p, st, j.ID, ws
}

// TestRetiredWorkerNeverClaims: a worker retired by setmaxjobs between its
// look at the queue and its claim leaves without taking the job.
func TestRetiredWorkerNeverClaims(t *testing.T) {
	p, st, id, ws := claimPool(t)
	p.mu.Lock()
	p.target = 1
	p.adjustLocked() // retires the newest idle worker, 2
	p.mu.Unlock()
	if !ws[1].quit || ws[0].quit {
		t.Fatalf("after resize to 1: worker 1 quit=%v, worker 2 quit=%v; want only 2 retired", ws[0].quit, ws[1].quit)
	}
	j, leave, err := p.claim(context.Background(), ws[1])
	if !leave || j != nil || err != nil {
		t.Fatalf("claim by a retired worker = %v, leave %v, %v; want no job and leave", j, leave, err)
	}
	if _, ok := p.workers[2]; ok {
		t.Errorf("the retired worker is still listed")
	}
	got, err := st.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.Queued || got.Attempts != 0 {
		t.Errorf("job after a retired worker's claim: %s, %d attempts; want queued, 0", got.State, got.Attempts)
	}
	// The live worker takes it and shows it.
	j, leave, err = p.claim(context.Background(), ws[0])
	if leave || err != nil || j == nil || j.ID != id {
		t.Fatalf("claim by the live worker = %v, leave %v, %v", j, leave, err)
	}
	if ws[0].state != workerBusy || ws[0].jobID != id {
		t.Errorf("live worker after its claim: %s %q, want busy %s", ws[0].state, ws[0].jobID, id)
	}
}

// TestClaimingWorkerRetiredLast: while a worker is asking the store for a
// job, a resize retires idle workers first and treats the claiming one as
// busy: once retired it shows as stopping (it runs what it claims, then
// leaves).
func TestClaimingWorkerRetiredLast(t *testing.T) {
	p, _, _, ws := claimPool(t)
	// Worker 2 (the newest, retired first among equals) is claiming.
	ws[1].claiming = true
	p.mu.Lock()
	p.target = 1
	p.adjustLocked()
	p.mu.Unlock()
	if ws[1].quit || !ws[0].quit {
		t.Fatalf("resize while worker 2 claims retired 1: %v, 2: %v; want only the idle worker 1", ws[0].quit, ws[1].quit)
	}
	// Down to zero live workers (as a test only: setmaxjobs takes 1 or
	// more): the claiming worker is retired like a busy one.
	p.mu.Lock()
	p.target = 0
	p.adjustLocked()
	p.mu.Unlock()
	if !ws[1].quit || ws[1].state != workerStopping {
		t.Fatalf("claiming worker retired: quit %v, state %s; want stopping", ws[1].quit, ws[1].state)
	}
}
