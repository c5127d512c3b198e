package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestBackendSIGSTOP stops a real backend `recon server` with SIGSTOP in
// the middle of an upload, and again in the middle of a download, through
// a real `recon relay` with IDLE_TIMEOUT_SECONDS = 2. Each time the client
// gets a clear error within about the idle timeout, not a hang; once the
// backend is continued, a retry with the same submission id resumes the
// upload the backend kept and makes exactly one job, and a retried fetch
// gets the whole result.
func TestBackendSIGSTOP(t *testing.T) {
	const (
		size        = 64 << 20
		sid         = "sigstop-1"
		idleTimeout = 2 * time.Second
		errorBound  = 30 * time.Second // generous: IDLE_TIMEOUT plus a few seconds is expected
	)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := t.TempDir()
	bdir, rdir := filepath.Join(base, "backend"), filepath.Join(base, "relay")
	for _, d := range []string{bdir, rdir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// One backend process, sharing its key with the relay.
	key := keys.MustGenerate().Encode()
	serverOpts(t, bdir, servertest.WriteScript(t, bdir, "s.sh", servertest.CopyScript), "SHARED_KEY = "+key)
	srv := startServer(t, bdir, "recon.opts")
	pid := srv.cmd.Process.Pid
	var stopMu sync.Mutex
	stopped := false
	sigstop := func() time.Time {
		stopMu.Lock()
		defer stopMu.Unlock()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Errorf("SIGSTOP backend: %v", err)
		}
		stopped = true
		return time.Now()
	}
	sigcont := func() {
		stopMu.Lock()
		defer stopMu.Unlock()
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("SIGCONT backend: %v", err)
		}
		stopped = false
	}
	// Registered after startServer, so it runs before the server is
	// stopped: a failing test never leaves a stopped process behind.
	t.Cleanup(func() {
		stopMu.Lock()
		s := stopped
		stopMu.Unlock()
		if s {
			sigcont()
		}
	})

	clientKey, adminKey := relayOpts(t, rdir, []string{srv.clientAddr}, key, "IDLE_TIMEOUT_SECONDS = 2")
	rp := startRelayProc(t, rdir, "relay.opts")
	relayAdminOpts(t, filepath.Join(rdir, "admin.opts"), rp.adminAddr, adminKey)
	relayCfg := client.Config{Address: rp.clientAddr, Key: clientKey, DialTimeout: 10 * time.Second}
	dialRelay := func() *client.Client {
		t.Helper()
		c, err := client.Dial(ctx, relayCfg)
		if err != nil {
			t.Fatalf("dial the relay: %v", err)
		}
		return c
	}
	// healthy asks the relay (recon relay-admin backends) whether the
	// backend is healthy.
	healthy := func() bool {
		t.Helper()
		r := runRecon(t, rdir, "relay-admin", "backends", "--opts", "admin.opts", "--json")
		var bs struct {
			Backends []struct {
				Healthy bool `json:"healthy"`
			} `json:"backends"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &bs) != nil || len(bs.Backends) != 1 {
			t.Fatalf("relay-admin backends --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		return bs.Backends[0].Healthy
	}
	// backendHealthy waits until the relay has seen the backend pass a
	// health check again.
	backendHealthy := func(what string) {
		t.Helper()
		start := time.Now()
		servertest.Eventually(t, 30*time.Second, "the relay sees the backend healthy again "+what, healthy)
		t.Logf("backend healthy on the relay %s after SIGCONT", time.Since(start).Round(time.Millisecond))
	}
	defer func() {
		if t.Failed() {
			t.Logf("relay stderr:\n%s", lastLines(rp.output(), 40))
			if b, err := os.ReadFile(filepath.Join(bdir, "recon.log")); err == nil {
				t.Logf("backend log (last lines):\n%s", lastLines(string(b), 40))
			}
		}
	}()

	in := filepath.Join(base, "scan.7")
	writeRandomFile(t, in, size, 42)
	inSHA := sha(t, in)

	// Upload: SIGSTOP the backend once the first bytes are sent.
	var (
		upOnce    sync.Once
		upStopped time.Time
		upDone    int64
	)
	c := dialRelay()
	uploadStart := time.Now()
	_, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{
		SubmissionID: sid,
		Reconnects:   -1,
		Progress: func(done, total int64) {
			if done > 0 && done < total {
				upOnce.Do(func() { upDone, upStopped = done, sigstop() })
			}
		},
	})
	errAt := time.Now()
	c.Close()
	if upStopped.IsZero() {
		sigcont()
		t.Fatalf("the upload never reported progress below its total (err %v): the backend was not stopped", err)
	}
	t.Logf("upload: SIGSTOP after %d of %d bytes, %s into the upload; error %s after SIGSTOP: %v",
		upDone, size, upStopped.Sub(uploadStart).Round(time.Millisecond), errAt.Sub(upStopped).Round(time.Millisecond), err)
	if err == nil {
		sigcont()
		t.Fatal("a submission to a backend stopped mid-upload succeeded")
	}
	if !client.IsCode(err, protocol.CodeUnavailable) {
		t.Errorf("upload to a stopped backend: %v, want an error with code %s", err, protocol.CodeUnavailable)
	}
	if d := errAt.Sub(upStopped); d > errorBound {
		t.Errorf("the upload error came %s after SIGSTOP, want within %s (IDLE_TIMEOUT_SECONDS = %s)", d, errorBound, idleTimeout)
	}
	// The relay marked the backend down when the upload broke, and no
	// health check can pass while it is stopped.
	if healthy() {
		t.Errorf("the relay reports the stopped backend healthy after the upload broke")
	}
	sigcont()
	backendHealthy("after the upload")

	// The retry with the same submission id resumes what the backend kept.
	c = dialRelay()
	retryStart := time.Now()
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid})
	c.Close()
	if err != nil {
		t.Fatalf("retried submission %s after SIGCONT: %v", sid, err)
	}
	t.Logf("retried upload took %s; job %s on %s", time.Since(retryStart).Round(time.Millisecond), job.JobID, job.Backend)
	kept := resumedRecords(t, filepath.Join(bdir, "recon.log"))
	t.Logf("backend kept %v bytes of %d", kept, size)
	if len(kept) != 1 || kept[0] <= 0 || kept[0] >= size {
		t.Errorf("backend log: upload resumed with bytes_kept %v, want one record with part of the file kept", kept)
	}

	// Exactly one job for the submission, on the backend itself.
	bc, err := client.Dial(ctx, client.Config{Address: srv.clientAddr, Key: key, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial the backend: %v", err)
	}
	defer bc.Close()
	q, err := bc.Queue(ctx)
	if err != nil {
		t.Fatalf("backend queue: %v", err)
	}
	var ids []string
	for _, j := range q {
		if j.SubmissionID == sid {
			ids = append(ids, j.JobID)
		}
	}
	if len(ids) != 1 || ids[0] != job.JobID {
		t.Fatalf("submission %s is jobs %v on the backend, want exactly [%s]", sid, ids, job.JobID)
	}
	if j, err := bc.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("job %s on the backend: %+v, %v", job.JobID, j, err)
	}

	// Download: SIGSTOP the backend once the first result bytes arrive.
	out := filepath.Join(base, "out")
	var (
		downOnce    sync.Once
		downStopped time.Time
		downDone    int64
	)
	c = dialRelay()
	downStart := time.Now()
	_, _, err = c.Fetch(ctx, job.JobID, out, &client.FetchOptions{
		Progress: func(done, total int64) {
			if done > 0 && done < total {
				downOnce.Do(func() { downDone, downStopped = done, sigstop() })
			}
		},
	})
	errAt = time.Now()
	c.Close()
	if downStopped.IsZero() {
		sigcont()
		t.Fatalf("the download never reported progress below its total (err %v): the backend was not stopped", err)
	}
	t.Logf("download: SIGSTOP after %d of %d bytes, %s into the download; error %s after SIGSTOP: %v",
		downDone, size, downStopped.Sub(downStart).Round(time.Millisecond), errAt.Sub(downStopped).Round(time.Millisecond), err)
	if err == nil {
		sigcont()
		t.Fatal("a fetch from a backend stopped mid-download succeeded")
	}
	if d := errAt.Sub(downStopped); d > errorBound {
		t.Errorf("the download error came %s after SIGSTOP, want within %s (IDLE_TIMEOUT_SECONDS = %s)", d, errorBound, idleTimeout)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output dir after a failed fetch: %v, want none", err)
	}
	if m, _ := filepath.Glob(filepath.Join(base, ".out.fetch-*")); len(m) != 0 {
		t.Errorf("partial download left behind: %v", m)
	}
	sigcont()

	// The retried fetch gets the whole result (the backend never got an
	// acknowledgement, so it still has it).
	retryStart = time.Now()
	attempts := 0
	var files []client.LocalFile
	for {
		attempts++
		c = dialRelay()
		_, files, err = c.Fetch(ctx, job.JobID, out, nil)
		c.Close()
		if err == nil {
			break
		}
		if !client.IsCode(err, protocol.CodeUnavailable) || ctx.Err() != nil {
			t.Fatalf("fetch retry %d of job %s after SIGCONT: %v", attempts, job.JobID, err)
		}
		t.Logf("fetch retry %d: %v", attempts, err)
		select {
		case <-ctx.Done():
			t.Fatalf("fetch of job %s still unavailable when the test's time ran out: %v", job.JobID, err)
		case <-time.After(200 * time.Millisecond): // poll interval
		}
	}
	t.Logf("retried download took %s in %d attempt(s)", time.Since(retryStart).Round(time.Millisecond), attempts)
	if len(files) != 1 || files[0].Name != "scan.7.out" {
		t.Fatalf("fetched results: %+v, want one file scan.7.out", files)
	}
	if got := sha(t, files[0].Path); got != inSHA {
		t.Errorf("result SHA-256 %s, input %s", got, inSHA)
	}
	if !strings.HasPrefix(files[0].Path, out) {
		t.Errorf("result written to %s, outside %s", files[0].Path, out)
	}
}
