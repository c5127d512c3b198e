package relay_test

import (
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestPlacementPrefersFreeWorker: of two real backends, one has a single
// worker, busy; the other has three workers, two of them busy. A job
// submitted through the relay goes to the one with a free worker and runs
// at once — even though it runs more jobs (counting queued plus running
// jobs put it on the one-worker backend, to wait there).
func TestPlacementPrefersFreeWorker(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	gate := t.TempDir()
	small := startBackends(t, 1, key, servertest.Options{Script: releaseScript(gate), Extra: map[string]string{"MAX_CONCURRENT_JOBS": "1"}})[0]
	big := startBackends(t, 1, key, servertest.Options{Script: releaseScript(gate), Extra: map[string]string{"MAX_CONCURRENT_JOBS": "3"}})[0]
	dir := t.TempDir()

	// Jobs submitted to each backend directly, held running by the script.
	var held []string
	for i, s := range []*servertest.Server{small, big, big} {
		c := s.Dial(t)
		j, err := c.Submit(ctx, []string{writeInput(t, dir, "held.7", 100+i, byte(i))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, j.JobID)
		servertest.Eventually(t, 20*time.Second, "held job runs", func() bool {
			j, err := c.Job(ctx, j.JobID)
			return err == nil && j.State == client.StateRunning
		})
	}
	t.Cleanup(func() {
		for _, id := range held {
			release(t, gate, id)
		}
	})

	r := startRelay(t, writeRelayConfig(t, dir, []string{small.Addr().String(), big.Addr().String()}, key, nil))
	a := r.admin(t)
	want := map[string][2]int{small.Addr().String(): {1, 1}, big.Addr().String(): {3, 2}} // workers, running
	servertest.Eventually(t, 20*time.Second, "the relay has checked both backends", func() bool {
		bs, err := a.Backends(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, b := range bs.Backends {
			if w, ok := want[b.Address]; ok && b.Healthy && b.Workers == w[0] && b.Running == w[1] {
				seen++
			}
		}
		return seen == 2
	})
	c := r.dial(t)
	j, err := c.Submit(ctx, []string{writeInput(t, dir, "new.7", 1000, 9)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Backend != big.Addr().String() {
		t.Fatalf("job placed on %s; want %s, the backend with a free worker (the other's only worker is busy)", j.Backend, big.Addr())
	}
	held = append(held, j.JobID)
	j = waitRelayJob(t, c, j.JobID, func(j *client.Job) bool { return j.State != client.StateQueued })
	if j.State != client.StateRunning {
		t.Errorf("placed job: %s, want running at once", j.State)
	}
	bs, err := a.Backends(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Backends {
		if b.Address == small.Addr().String() && b.JobsPlaced != 0 {
			t.Errorf("one-worker backend: %+v; want no job placed", b)
		}
	}
}

// waitRelayJob polls a job through the relay until cond holds.
func waitRelayJob(t *testing.T, c *client.Client, id string, cond func(*client.Job) bool) *client.Job {
	t.Helper()
	var last *client.Job
	servertest.Eventually(t, 20*time.Second, "job "+id, func() bool {
		j, err := c.Job(testCtx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		last = j
		return cond(j)
	})
	return last
}
