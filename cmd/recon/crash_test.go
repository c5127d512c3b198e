package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/servertest"
)

// crashLedger is what the clients of TestCrashLoop know: the inputs, the
// job each submission was acknowledged as, and which results they hold.
type crashLedger struct {
	mu      sync.Mutex
	inputs  map[string]string // submission id → input path
	sums    map[string]string // submission id → SHA-256 of the input
	acked   map[string]string // submission id → job id
	fetched map[string]bool   // submission id → results verified locally
	errs    []error
}

func (l *crashLedger) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

// next picks work: a submission not acknowledged yet, or an acknowledged
// job whose results are not fetched yet; taken marks work in progress.
func (l *crashLedger) next(taken map[string]bool) (sid string, submit bool, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.inputs {
		if _, ack := l.acked[s]; !ack && !taken[s] {
			taken[s] = true
			return s, true, true
		}
	}
	for s := range l.acked {
		if !l.fetched[s] && !taken[s] {
			taken[s] = true
			return s, false, true
		}
	}
	return "", false, false
}

// ack records that sid was acknowledged as job id: always the same job.
func (l *crashLedger) ack(sid, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev, ok := l.acked[sid]; ok && prev != id {
		l.errs = append(l.errs, fmt.Errorf("submission %s acknowledged as job %s and as job %s", sid, prev, id))
		return
	}
	l.acked[sid] = id
}

// verifyLocal checks the fetched result of sid in dir against its input.
func (l *crashLedger) verifyLocal(sid, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, sid+".7.out"))
	if err != nil {
		return err
	}
	h := sha256.Sum256(b)
	if got := hex.EncodeToString(h[:]); got != l.sums[sid] {
		return fmt.Errorf("result of %s has SHA-256 %s, input %s", sid, got, l.sums[sid])
	}
	return nil
}

// crashWork runs clients against addr until ctx ends or nothing is left:
// submit what is not acknowledged (with its submission id), wait for and
// fetch what is. Errors from a server that goes away end a client.
func crashWork(ctx context.Context, l *crashLedger, addr, key, outDir string, clients int) {
	var wg sync.WaitGroup
	var tmu sync.Mutex
	taken := map[string]bool{}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, client.Config{Address: addr, Key: key, DialTimeout: 5 * time.Second})
			if err != nil {
				return
			}
			defer c.Close()
			for ctx.Err() == nil {
				tmu.Lock()
				sid, submit, ok := l.next(taken)
				tmu.Unlock()
				if !ok {
					return
				}
				err := crashStep(ctx, c, l, sid, submit, outDir)
				tmu.Lock()
				delete(taken, sid)
				tmu.Unlock()
				if err != nil {
					return // the server went away (or ctx ended): this client is done
				}
			}
		}()
	}
	wg.Wait()
}

func crashStep(ctx context.Context, c *client.Client, l *crashLedger, sid string, submit bool, outDir string) error {
	if submit {
		job, err := c.Submit(ctx, []string{l.inputs[sid]}, &client.SubmitOptions{SubmissionID: sid})
		if err != nil {
			return err
		}
		l.ack(sid, job.JobID)
		return nil
	}
	l.mu.Lock()
	id := l.acked[sid]
	l.mu.Unlock()
	j, err := c.Wait(ctx, id, nil)
	if err != nil {
		if client.IsCode(err, client.CodeNotFound) {
			l.fail("acknowledged job %s (%s) is unknown to the server", id, sid)
		}
		return err
	}
	if j.State != "succeeded" {
		l.fail("job %s (%s) ended %s: %s", id, sid, j.State, j.Error)
		l.mu.Lock()
		l.fetched[sid] = true // nothing to fetch
		l.mu.Unlock()
		return nil
	}
	dir := filepath.Join(outDir, sid)
	_, _, err = c.Fetch(ctx, id, dir, nil)
	if client.IsCode(err, client.CodeGone) {
		// The server recorded the delivery, but the crash took its answer:
		// the files must be here, verified, from that fetch.
		if verr := l.verifyLocal(sid, dir); verr != nil {
			l.fail("job %s (%s): results gone from the server and not here: %v", id, sid, verr)
		}
		err = nil
	} else if err == nil {
		if verr := l.verifyLocal(sid, dir); verr != nil {
			l.fail("job %s (%s): %v", id, sid, verr)
		}
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.fetched[sid] = true
	l.mu.Unlock()
	return nil
}

// TestCrashLoop kills a real `recon server` with SIGKILL at random moments
// while clients upload, jobs run and results are delivered, five times,
// restarting it on the same data each time; then lets everything finish.
// Every submission acknowledged to a client is one job, which completes
// with the right results, whatever the retries; and no input, upload or
// result is left behind in the data directories.
func TestCrashLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	dir := t.TempDir()
	// The script takes a moment, so that kills find jobs running.
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
sleep 0.2
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
	key := serverOpts(t, dir, script, "MAX_CONCURRENT_JOBS = 2", "MAX_JOB_ATTEMPTS = 100")
	l := &crashLedger{inputs: map[string]string{}, sums: map[string]string{}, acked: map[string]string{}, fetched: map[string]bool{}}
	in := filepath.Join(dir, "in")
	os.Mkdir(in, 0o700)
	const n = 16
	for i := range n {
		sid := fmt.Sprintf("crash-%02d", i)
		b := make([]byte, 1+rng.IntN(8<<20))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(in, sid+".7")
		writeFile(t, p, string(b), 0o600)
		h := sha256.Sum256(b)
		l.inputs[sid], l.sums[sid] = p, hex.EncodeToString(h[:])
	}
	out := filepath.Join(dir, "out")

	const crashes = 5
	for i := range crashes {
		srv := startServer(t, dir, "recon.opts")
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { crashWork(wctx, l, srv.clientAddr, key, out, 3); close(done) }()
		delay := time.Duration(50+rng.IntN(700)) * time.Millisecond
		select {
		case <-time.After(delay):
		case <-done:
		}
		srv.kill9(t)
		wcancel()
		<-done
		l.mu.Lock()
		t.Logf("crash %d after %v: %d acknowledged, %d fetched", i+1, delay, len(l.acked), len(l.fetched))
		l.mu.Unlock()
	}

	// The last start: everything finishes.
	srv := startServer(t, dir, "recon.opts")
	for ctx.Err() == nil {
		crashWork(ctx, l, srv.clientAddr, key, out, 3)
		l.mu.Lock()
		finished := len(l.fetched) == n
		l.mu.Unlock()
		if finished {
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("jobs did not finish in time: %d acknowledged, %d fetched", len(l.acked), len(l.fetched))
	}
	for _, err := range l.errs {
		t.Error(err)
	}

	// Exactly one job per submission, each the one acknowledged.
	c, err := client.Dial(ctx, client.Config{Address: srv.clientAddr, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bySID := map[string][]string{}
	for _, j := range q {
		bySID[j.SubmissionID] = append(bySID[j.SubmissionID], j.JobID)
		if j.State != "succeeded" {
			t.Errorf("job %s (%s) is %s", j.JobID, j.SubmissionID, j.State)
		}
	}
	for sid := range l.inputs {
		if ids := bySID[sid]; len(ids) != 1 || ids[0] != l.acked[sid] {
			t.Errorf("submission %s: jobs %v on the server, acknowledged as %s", sid, ids, l.acked[sid])
		}
	}
	if len(q) != n {
		t.Errorf("the server holds %d jobs for %d submissions", len(q), n)
	}

	// Nothing left behind: inputs of finished jobs, interrupted uploads,
	// delivered results.
	data := filepath.Join(dir, "data")
	servertest.Eventually(t, 30*time.Second, "the data directories are empty", func() bool {
		for _, d := range []string{"inputs", "outputs"} {
			es, err := os.ReadDir(filepath.Join(data, d))
			if err != nil || len(es) != 0 {
				return false
			}
		}
		return true
	})
	if es, _ := os.ReadDir(filepath.Join(data, "outputs")); len(es) != 0 {
		t.Errorf("outputs left: %v", es)
	}
	// The log says why each start happened; keep it short on failure.
	if t.Failed() {
		b, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
		if i := bytes.LastIndex(b, []byte("server started")); i > 0 {
			t.Logf("end of the server log:\n%s", lastLines(string(b[i:]), 40))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
