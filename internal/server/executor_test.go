package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
)

// scriptedExecutor is an executor whose attempts do what the test says,
// by job id: the second executor the seam is for, in miniature.
type scriptedExecutor struct {
	mu       sync.Mutex
	attempts []attempt
	do       map[string]func(ctx context.Context, a attempt) outcome
}

func (e *scriptedExecutor) recover(context.Context) error { return nil }

func (e *scriptedExecutor) run(ctx context.Context, a attempt) outcome {
	e.mu.Lock()
	e.attempts = append(e.attempts, a)
	do := e.do[a.jobID]
	e.mu.Unlock()
	return do(ctx, a)
}

func (e *scriptedExecutor) started(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range e.attempts {
		if a.jobID == id {
			return true
		}
	}
	return false
}

// TestPoolRunsJobsThroughExecutor: the pool hands claimed jobs to its
// executor and records each outcome the executor reports: an exit (results
// collected from the job's output directory), a failure (its message, the
// output gone), a stop by an administrator's cancel (cancelled) and a stop
// by the server's shutdown (queued again, the start not counted).
func TestPoolRunsJobsThroughExecutor(t *testing.T) {
	base := t.TempDir()
	cfg := &config.Server{
		InputBaseDir:   filepath.Join(base, "in"),
		OutputBaseDir:  filepath.Join(base, "out"),
		MaxResultFiles: 10,
		MaxResultBytes: 1 << 20,
	}
	for _, d := range []string{cfg.InputBaseDir, cfg.OutputBaseDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	st, err := jobs.Open(filepath.Join(base, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()
	create := func(opts map[string]string) string {
		t.Helper()
		j, _, err := st.Create(ctx, &jobs.Job{Files: []jobs.File{{Name: "a.7", Size: 1, SHA256: "00"}}, Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(cfg.InputBaseDir, j.ID), 0o700); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	ok, bad, cancelled, stopping := create(map[string]string{"k": "v"}), create(nil), create(nil), create(nil)

	untilDone := func(ctx context.Context, a attempt) outcome {
		<-ctx.Done()
		return outcome{end: stopped}
	}
	exec := &scriptedExecutor{do: map[string]func(context.Context, attempt) outcome{
		ok: func(_ context.Context, a attempt) outcome {
			out := filepath.Join(cfg.OutputBaseDir, a.jobID)
			if err := os.Mkdir(out, 0o700); err == nil {
				err = os.WriteFile(filepath.Join(out, "r.txt"), []byte("result"), 0o600)
			}
			if err != nil {
				return failure(err.Error(), nil)
			}
			exit := 0
			return outcome{end: exited, exit: &exit}
		},
		bad:       func(context.Context, attempt) outcome { return failure("the executor could not run it", nil) },
		cancelled: untilDone,
		stopping:  untilDone,
	}}
	p := newPool(poolDeps{
		cfg: cfg, log: slog.New(slog.DiscardHandler), store: st, exec: exec, changed: newNotifier(),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d"}, []string{"state"}),
	}, 4, newGate(&fakeSampler{r: Reading{AvailableBytes: 1 << 40}}, 100, 0, 0, slog.New(slog.DiscardHandler)))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { p.run(runCtx) })

	get := func(id string) *jobs.Job {
		t.Helper()
		j, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("both blocking attempts to start", func() bool { return exec.started(cancelled) && exec.started(stopping) })
	if prev, err := p.cancelJob(ctx, cancelled); err != nil || prev != jobs.Running {
		t.Fatalf("cancelJob = %s, %v; want running, nil", prev, err)
	}
	for _, id := range []string{ok, bad, cancelled} {
		waitFor("job "+id+" to end", func() bool { return get(id).State.Terminal() })
	}
	stop()
	wg.Wait()

	type end struct {
		State   jobs.State
		Error   string
		Results []jobs.File
		Input   bool // its input directory is still there
	}
	endOf := func(id string) end {
		j := get(id)
		_, err := os.Stat(filepath.Join(cfg.InputBaseDir, id))
		return end{j.State, j.Error, j.Results, err == nil}
	}
	sum := "f6a214f7a5fcda0c2cee9660b7fc29f5649e3c68aad48e20e950137c98913a68"
	want := map[string]end{
		ok:        {State: jobs.Succeeded, Results: []jobs.File{{Name: "r.txt", Size: 6, SHA256: sum, BLAKE3: "44e86eb38ff9b065a1e805dd61f624e334a4296479e4be43c354ca8af90b0340"}}},
		bad:       {State: jobs.Failed, Error: "the executor could not run it"},
		cancelled: {State: jobs.Cancelled, Error: "cancelled by an administrator"},
		stopping:  {State: jobs.Queued, Error: "the server stopped while the job was running", Input: true},
	}
	for id, w := range want {
		if diff := cmp.Diff(w, endOf(id)); diff != "" {
			t.Errorf("job %s (-want +got):\n%s", id, diff)
		}
	}
	if j := get(stopping); j.Attempts != 0 {
		t.Errorf("job stopped by the shutdown has %d attempts, want 0", j.Attempts)
	}
	for _, a := range exec.attempts {
		if a.n != 1 || a.log == nil || (a.jobID == ok) != (a.options["k"] == "v") {
			t.Errorf("attempt %+v: want attempt 1, a logger, and the job's options", a)
		}
	}
}
