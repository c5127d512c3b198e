package relay_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// releaseScript is a reconstruction script that holds each job until the
// file release-<job id> appears in dir, then copies its inputs.
func releaseScript(dir string) string {
	return `#!/bin/sh
while [ ! -e "` + dir + `/release-$RECON_JOB_ID" ]; do sleep 0.02; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`
}

func release(t *testing.T, dir, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "release-"+id), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEventsThroughRelay follows a job through the relay with an event
// callback: its backend runs one job at a time, so the job is first queued
// behind another (with its position), then running, then done; each state
// arrives through the relay before the end, labelled with the backend.
func TestEventsThroughRelay(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	gate := t.TempDir()
	bs := startBackends(t, 1, key, servertest.Options{Script: releaseScript(gate), Extra: map[string]string{"MAX_CONCURRENT_JOBS": "1"}})
	addr := bs[0].Addr().String()
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{addr}, key, nil))
	c := r.dial(t)

	first, err := c.Submit(ctx, []string{writeInput(t, dir, "first.7", 1000, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "the first job runs", func() bool {
		j, err := c.Job(ctx, first.JobID)
		return err == nil && j.State == "running"
	})
	in := writeInput(t, dir, "second.7", 2000, 2)
	second, err := c.Submit(ctx, []string{in}, nil)
	if err != nil {
		t.Fatal(err)
	}

	events := make(chan client.Job, 64)
	type waitResult struct {
		job *client.Job
		err error
	}
	done := make(chan waitResult, 1)
	w := r.dial(t)
	go func() {
		j, err := w.Wait(ctx, second.JobID, func(j client.Job) { events <- j })
		close(events)
		done <- waitResult{j, err}
	}()
	next := func(what string) client.Job {
		t.Helper()
		select {
		case j, ok := <-events:
			if !ok {
				res := <-done
				t.Fatalf("wait ended (%+v, %v) before %s", res.job, res.err, what)
			}
			if j.JobID != second.JobID || j.Backend != addr {
				t.Errorf("event %+v: want job %s on backend %s", j, second.JobID, addr)
			}
			return j
		case <-ctx.Done():
			t.Fatalf("no event %s before the test's deadline", what)
		}
		return client.Job{}
	}

	// Queued behind the first job, with its position.
	if j := next("queued"); j.State != "queued" || j.Position < 1 {
		t.Fatalf("first event through the relay: state %s, position %d; want queued with a position", j.State, j.Position)
	}
	release(t, gate, first.JobID)
	var j client.Job
	for j = next("running"); j.State == "queued"; j = next("running") {
	}
	if j.State != "running" {
		t.Fatalf("event after the first job ended: %s, want running", j.State)
	}
	// Running, and the wait has not ended: the job is held.
	select {
	case res := <-done:
		t.Fatalf("wait ended while the job was held: %+v, %v", res.job, res.err)
	default:
	}
	release(t, gate, second.JobID)
	for j := range events {
		if j.Terminal() && j.State != "succeeded" {
			t.Errorf("final event: %+v", j)
		}
	}
	res := <-done
	if res.err != nil || res.job.State != "succeeded" || res.job.Backend != addr {
		t.Fatalf("wait through the relay: %+v, %v", res.job, res.err)
	}
}

// TestRefusedOutsideTrustedClientIPs: with TRUSTED_CLIENT_IPS = 10.0.0.0/8,
// a client on 127.0.0.1 with the right key is refused with a clear error,
// and the relay logs the refusal; the admin listener is not concerned.
func TestRefusedOutsideTrustedClientIPs(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String()}, key, map[string]string{"TRUSTED_CLIENT_IPS": "10.0.0.0/8"}))
	_, err := client.Dial(ctx, r.clientConfig())
	if err == nil {
		t.Fatal("a client on 127.0.0.1 connected; TRUSTED_CLIENT_IPS is 10.0.0.0/8")
	}
	if !errors.Is(err, client.ErrAuth) || !strings.Contains(err.Error(), "not allowed") || !strings.Contains(err.Error(), r.Addr().String()) {
		t.Errorf("client outside TRUSTED_CLIENT_IPS: %v; want ErrAuth naming the address and saying it may not be allowed", err)
	}
	servertest.Eventually(t, 10*time.Second, "the refusal is logged", func() bool {
		for _, rec := range servertest.LogRecords(t, r.Config.LogFile, "connection refused: address not in the allow-list") {
			if p, _ := rec["peer"].(string); strings.HasPrefix(p, "127.0.0.1:") && rec["listener"] == "client" {
				return true
			}
		}
		return false
	})
	if _, err := r.admin(t).Status(ctx); err != nil {
		t.Errorf("relay admin from 127.0.0.1 (not subject to TRUSTED_CLIENT_IPS): %v", err)
	}
}

// TestRefusingBackendSkipped: backends that refuse a submission before
// taking its files (one with its queue full, MAX_QUEUED_JOBS = 1; one
// without the disk space it keeps free) are skipped: concurrent
// submissions all succeed, on the other backends, with correct results.
// The relay checks its backends only once (a long health interval), so it
// keeps seeing the refusing ones as idle and offers every submission to
// them first: each refusal is exercised.
func TestRefusingBackendSkipped(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	gate := t.TempDir()
	full := startBackends(t, 1, key, servertest.Options{Script: releaseScript(gate),
		Extra: map[string]string{"MAX_CONCURRENT_JOBS": "1", "MAX_QUEUED_JOBS": "1"}})[0]
	// One worker each, as the full one has: placement prefers free
	// workers, and at the one check they all have one.
	noDisk := startBackends(t, 1, key, servertest.Options{Extra: map[string]string{"MIN_FREE_DISK_MB": "1000000000", "MAX_CONCURRENT_JOBS": "1"}})[0]
	ok := startBackends(t, 2, key, servertest.Options{Extra: map[string]string{"MAX_CONCURRENT_JOBS": "1"}})
	addrs := []string{full.Addr().String(), noDisk.Addr().String(), ok[0].Addr().String(), ok[1].Addr().String()}
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, addrs, key, map[string]string{"BACKEND_HEALTH_INTERVAL_SECONDS": "3600"}))

	// Fill the first backend's queue directly: one job running, then one
	// queued.
	fc := full.Dial(t)
	var held []string
	t.Cleanup(func() {
		for _, id := range held {
			release(t, gate, id)
		}
	})
	for i, want := range []string{"running", "queued"} {
		j, err := fc.Submit(ctx, []string{writeInput(t, dir, fmt.Sprintf("held%d.7", i), 100, byte(i))}, nil)
		if err != nil {
			t.Fatalf("fill the queue of %s: %v", addrs[0], err)
		}
		held = append(held, j.JobID)
		servertest.Eventually(t, 20*time.Second, "held job "+want, func() bool {
			j, err := fc.Job(ctx, j.JobID)
			if err != nil {
				t.Fatal(err)
			}
			return string(j.State) == want
		})
	}

	const n = 6
	per := submitConcurrently(t, r, n, func(i int) string {
		return writeInput(t, dir, fmt.Sprintf("q%d.7", i), 50_000+i, byte(i*13))
	})
	if per[addrs[0]] != 0 || per[addrs[1]] != 0 || per[addrs[2]]+per[addrs[3]] != n {
		t.Errorf("jobs per backend %v: want all %d on %s and %s, none on the refusing %s and %s", per, n, addrs[2], addrs[3], addrs[0], addrs[1])
	}
	// Each refusing backend was offered submissions, and refused them for
	// its reason.
	for _, want := range []struct{ addr, reason string }{{addrs[0], "queue is full"}, {addrs[1], "disk space"}} {
		refused := 0
		for _, rec := range servertest.LogRecords(t, r.Config.LogFile, "backend did not take the submission; trying the next") {
			if e, _ := rec["err"].(string); rec["backend"] == want.addr && strings.Contains(e, want.reason) {
				refused++
			}
		}
		if refused == 0 {
			t.Errorf("the relay log shows no submission refused by %s (%s): the failover was not exercised", want.addr, want.reason)
		}
		t.Logf("%s refused %d of the %d submissions (%s)", want.addr, refused, n, want.reason)
	}
}
