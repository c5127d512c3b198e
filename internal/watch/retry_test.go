//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package watch

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestBackoff: the delay doubles from min up to max and stays there; each
// wait is jittered between half and all of the step; reset starts again
// from min.
func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		min, max time.Duration
		steps    []time.Duration // the step before jitter, call by call
	}{
		{time.Second, time.Minute, []time.Duration{1e9, 2e9, 4e9, 8e9, 16e9, 32e9, 60e9, 60e9, 60e9}},
		{20 * ms, 200 * ms, []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 200 * ms, 200 * ms}},
		{time.Second, time.Second, []time.Duration{1e9, 1e9, 1e9}},
		{3 * ms, 10 * ms, []time.Duration{3 * ms, 6 * ms, 10 * ms, 10 * ms}},
	} {
		// Jitter is random: run each sequence many times.
		seen := map[time.Duration]bool{}
		for run := 0; run < 200; run++ {
			b := backoff{min: tc.min, max: tc.max}
			for round := 0; round < 2; round++ { // the second round after reset
				for i, step := range tc.steps {
					d := b.next()
					if b.cur != step {
						t.Fatalf("backoff{%s, %s}: call %d (round %d) step %s, want %s", tc.min, tc.max, i+1, round, b.cur, step)
					}
					if d < step/2 || d > step {
						t.Fatalf("backoff{%s, %s}: call %d gave %s, want within [%s, %s]", tc.min, tc.max, i+1, d, step/2, step)
					}
					if i == 0 {
						seen[d] = true
					}
				}
				b.reset()
			}
		}
		if len(seen) < 2 {
			t.Errorf("backoff{%s, %s}: the first wait was always %v: no jitter", tc.min, tc.max, seen)
		}
	}
}

// TestLoopResetsBackoff: the retry loop waits longer after each failure
// in a row, logs each one with its wait, and starts from the shortest
// wait again after a success.
func TestLoopResetsBackoff(t *testing.T) {
	logs := &syncBuffer{}
	w := &Watcher{
		cfg: Config{RetryMin: time.Millisecond, RetryMax: 4 * time.Millisecond},
		log: slog.New(slog.NewJSONHandler(logs, nil)),
	}
	e := &env{t: t, logs: logs}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// f: a retryable failure, s: a success.
	script := "ffffsff"
	calls := 0
	err := w.loop(ctx, "test step", make(chan struct{}), func(context.Context) (bool, error) {
		if calls == len(script) {
			cancel()
			return true, nil
		}
		c := script[calls]
		calls++
		if c == 'f' {
			return false, &retryable{err: errors.New("server away")}
		}
		return false, nil
	})
	if err != nil || calls != len(script) {
		t.Fatalf("loop returned %v after %d steps, want nil after %d", err, calls, len(script))
	}
	recs := e.logRecords("test step failed; retrying")
	// The step before jitter, failure by failure: 1, 2, 4, 4, then reset.
	steps := []time.Duration{1, 2, 4, 4, 1, 2}
	if len(recs) != len(steps) {
		t.Fatalf("%d retry records, want %d: %v", len(recs), len(steps), recs)
	}
	for i, r := range recs {
		step := steps[i] * time.Millisecond
		d := time.Duration(r["retry_seconds"].(float64) * float64(time.Second))
		if d < step/2-time.Microsecond || d > step+time.Microsecond || r["err"] != "server away" {
			t.Errorf("retry %d: %v, want a wait within [%s, %s] and the error", i+1, r, step/2, step)
		}
	}
}

// TestServerRestartMidUpload: the server goes away in the middle of an
// upload and comes back on the same port with the same state. Each
// reconnect is logged with the group and the error, the upload resumes,
// and the group goes through exactly once.
func TestServerRestartMidUpload(t *testing.T) {
	e := newEnv(t)
	start := e.serverLater(servertest.Options{})
	srv := start()
	inUpload, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	d := e.start(hooks{uploading: func(_ *Group, done, total int64) bool {
		if done < total {
			// Hold the upload while the test stops the server.
			once.Do(func() { close(inUpload); <-release })
		}
		return false
	}})
	data := content("U", bigSize)
	writeFile(t, filepath.Join(e.dir, "U.7"), data)
	select {
	case <-inUpload:
	case <-e.ctx.Done():
		t.Fatal("upload did not start")
	}
	srv.Stop(t)
	close(release)
	// While the server is away: the client's reconnects, then the
	// submitter's retries, each in the log.
	rec := e.logWhen("submission interrupted; reconnecting", nil)
	retry := e.logWhen("submission failed; retrying", nil)
	srv = start()
	gs := e.groupsWhen(d, "group done", allFinished(1))
	g := gs[0]
	if g.Status != StatusDone {
		t.Fatalf("group %s %s: %s", g.Name, g.Status, g.Error)
	}
	if rec["group"] != g.Name || str(rec["err"]) == "" || rec["reconnect"] != 1.0 || rec["level"] != "WARN" {
		t.Errorf("reconnect record %v, want a warning with the group %s, the error and the attempt", rec, g.Name)
	}
	if retry["group"] != g.Name || str(retry["err"]) == "" {
		t.Errorf("retry record %v, want the group %s and the error", retry, g.Name)
	}
	e.checkResults(g, map[string][]byte{"U.7": data})
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 || jobs[0].JobID != g.JobID {
		t.Errorf("server has %d jobs (%+v), want just %s", len(jobs), jobs, g.JobID)
	}
	if recs := e.logRecords("group submitted"); len(recs) != 1 {
		t.Errorf("%d submission records, want 1: %v", len(recs), recs)
	}
	if recs := e.logRecords("group done"); len(recs) != 1 {
		t.Errorf("%d done records, want 1: %v", len(recs), recs)
	}
}
