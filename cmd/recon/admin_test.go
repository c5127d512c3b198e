package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// adminOpts writes an admin config for the server in dir (whose recon.opts
// holds the admin key) reaching its admin listener at addr.
func adminOpts(t *testing.T, dir, path, addr string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "recon.opts"))
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "SERVER_ADMIN_SHARED_KEY" {
			key = strings.TrimSpace(v)
		}
	}
	host, port, _ := strings.Cut(addr, ":")
	writeFile(t, path, fmt.Sprintf("SERVER_ADMIN_HOSTNAME = %s\nSERVER_ADMIN_PORT = %s\nSERVER_ADMIN_SHARED_KEY = %s\n", host, port, key), 0o600)
}

// blockingScript records each start in DIR/starts, starts a background
// grandchild whose pid goes to DIR/child-<job>, and waits for DIR/release.
func blockingScript(t *testing.T, dir string) string {
	return servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
echo "$RECON_JOB_ID" >> "`+dir+`/starts"
sleep 1000 &
echo $! > "`+dir+`/child-$RECON_JOB_ID"
while [ ! -e "`+dir+`/release" ]; do sleep 0.05; done
kill $! 2>/dev/null || true
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
}

func startsOf(dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "starts"))
	return strings.Fields(string(b))
}

func submitNoWait(t *testing.T, dir, opts string) string {
	t.Helper()
	name := filepath.Join(dir, fmt.Sprintf("in-%d.7", time.Now().UnixNano()))
	writeFile(t, name, "raw", 0o644)
	r := runRecon(t, dir, "submit", "--opts", opts, "--no-wait", name)
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func adminJSON(t *testing.T, dir string, v any, args ...string) {
	t.Helper()
	r := runRecon(t, dir, append([]string{"admin", "--opts", "admin.opts", "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("recon admin %v: exit %d\n%s", args, r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("recon admin %v --json: %v\n%s", args, err, r.stdout)
	}
}

func TestAdminCommands(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, blockingScript(t, dir), "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)

	running := submitNoWait(t, dir, "client.opts")
	queued := submitNoWait(t, dir, "client.opts")
	servertest.Eventually(t, 20*time.Second, "first job running", func() bool {
		_, err := os.Stat(filepath.Join(dir, "child-"+running))
		return err == nil
	})

	var st struct {
		UptimeSeconds *float64       `json:"uptime_seconds"`
		Version       string         `json:"version"`
		Jobs          map[string]int `json:"jobs"`
		Workers       struct {
			Workers []map[string]any `json:"workers"`
			Paused  bool             `json:"paused"`
		} `json:"workers"`
		Resources map[string]any    `json:"resources"`
		Disks     []map[string]any  `json:"disks"`
		Config    map[string]string `json:"config"`
	}
	adminJSON(t, dir, &st, "status")
	if st.UptimeSeconds == nil || st.Jobs["running"] != 1 || st.Jobs["queued"] != 1 || len(st.Workers.Workers) != 1 ||
		st.Resources["max_cpu_percent"] == nil || len(st.Disks) != 3 || st.Config["MAX_CONCURRENT_JOBS"] != "1" {
		t.Errorf("admin status --json = %+v", st)
	}
	for k, v := range st.Config {
		if strings.Contains(k, "KEY") || strings.Contains(v, key) {
			t.Errorf("admin status shows a secret: %s", k)
		}
	}
	if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "status"); r.code != 0 || !strings.Contains(r.stdout, "workers") || !strings.Contains(r.stdout, "cpu") {
		t.Errorf("admin status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	var q struct {
		Jobs []struct {
			JobID      string `json:"job_id"`
			State      string `json:"state"`
			Position   int    `json:"position"`
			ClientAddr string `json:"client_addr"`
			Attempts   int    `json:"attempts"`
		} `json:"jobs"`
	}
	adminJSON(t, dir, &q, "queue")
	if len(q.Jobs) != 2 || q.Jobs[0].JobID != running || q.Jobs[0].State != "running" || q.Jobs[1].Position != 1 || q.Jobs[0].ClientAddr == "" {
		t.Errorf("admin queue --json = %+v", q)
	}
	if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "queue"); !strings.Contains(r.stdout, queued) || !strings.Contains(r.stdout, "ATTEMPTS") {
		t.Errorf("admin queue:\n%s%s", r.stdout, r.stderr)
	}

	var w struct {
		Workers []struct {
			ID    int    `json:"id"`
			State string `json:"state"`
			JobID string `json:"job_id"`
		} `json:"workers"`
		Paused *bool `json:"paused"`
	}
	adminJSON(t, dir, &w, "workers")
	if len(w.Workers) != 1 || w.Workers[0].State != "busy" || w.Workers[0].JobID != running || w.Paused == nil || *w.Paused {
		t.Errorf("admin workers --json = %+v", w)
	}

	// logs: --lines and --jobid.
	r := runRecon(t, dir, "admin", "--opts", "admin.opts", "logs", "--lines", "3")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 3 {
		t.Errorf("logs --lines 3: exit %d, %d lines\n%s", r.code, len(lines), r.stdout)
	}
	r = runRecon(t, dir, "admin", "--opts", "admin.opts", "logs", "--lines", "1000", "--jobid", running)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) < 2 {
		t.Fatalf("logs --jobid: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["job_id"] != running {
			t.Errorf("logs --jobid %s returned %q", running, l)
		}
	}

	// A client waiting on the running job sees it cancelled and exits 3.
	waiter := exec.Command(reconBin, "fetch", "--opts", "client.opts", running)
	waiter.Dir = dir
	var wout strings.Builder
	waiter.Stdout, waiter.Stderr = &wout, &wout
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	var c struct {
		PreviousState string `json:"previous_state"`
		State         string `json:"state"`
	}
	adminJSON(t, dir, &c, "cancel", queued)
	if c.PreviousState != "queued" || c.State != "cancelled" {
		t.Errorf("cancel of a queued job = %+v", c)
	}
	adminJSON(t, dir, &c, "cancel", running)
	if c.PreviousState != "running" || c.State != "cancelled" {
		t.Errorf("cancel of a running job = %+v", c)
	}
	pidText, _ := os.ReadFile(filepath.Join(dir, "child-"+running))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	servertest.Eventually(t, 20*time.Second, "the script's grandchild ended", func() bool {
		err := syscall.Kill(pid, 0)
		if err == syscall.ESRCH {
			return true
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return strings.Contains(string(stat), ") Z ")
	})
	done := make(chan error, 1)
	go func() { done <- waiter.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitJobFailed || !strings.Contains(wout.String(), "cancelled") {
			t.Errorf("waiting client: %v (want exit %d, cancelled)\n%s", err, exitJobFailed, wout.String())
		}
	case <-time.After(30 * time.Second):
		waiter.Process.Kill()
		t.Errorf("waiting client did not end after the cancel")
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "inputs", running)); err == nil {
		t.Error("the cancelled job's input dir is still there")
	}
	// Finished and unknown jobs.
	if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "cancel", running); r.code == 0 || !strings.Contains(r.stderr, "already ended") {
		t.Errorf("cancel of a finished job: exit %d, %q", r.code, r.stderr)
	}
	if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "cancel", "aaaaaaaaaaaaaaaaaaaaaaaaaa"); r.code == 0 || !strings.Contains(r.stderr, "no job") {
		t.Errorf("cancel of an unknown job: exit %d, %q", r.code, r.stderr)
	}

	// setmaxjobs.
	var sm struct {
		Previous int    `json:"previous"`
		MaxJobs  int    `json:"max_jobs"`
		Note     string `json:"note"`
	}
	adminJSON(t, dir, &sm, "setmaxjobs", "3")
	if sm.Previous != 1 || sm.MaxJobs != 3 || !strings.Contains(sm.Note, "MAX_CONCURRENT_JOBS") {
		t.Errorf("setmaxjobs 3 = %+v", sm)
	}
	adminJSON(t, dir, &w, "workers")
	if len(w.Workers) != 3 {
		t.Errorf("after setmaxjobs 3, workers = %+v", w)
	}
	for _, bad := range []string{"0", "1025", "x"} {
		if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "setmaxjobs", bad); r.code != exitUsage {
			t.Errorf("setmaxjobs %s: exit %d, want %d", bad, r.code, exitUsage)
		}
	}
}

// TestSetMaxJobsUpAndDown changes the worker count while jobs run: every
// job runs exactly once and succeeds.
func TestSetMaxJobsUpAndDown(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, blockingScript(t, dir), "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	var ids []string
	for range 6 {
		ids = append(ids, submitNoWait(t, dir, "client.opts"))
	}
	servertest.Eventually(t, 20*time.Second, "one job running", func() bool { return len(startsOf(dir)) == 1 })
	var sm map[string]any
	adminJSON(t, dir, &sm, "setmaxjobs", "3")
	servertest.Eventually(t, 20*time.Second, "three jobs running", func() bool { return len(startsOf(dir)) == 3 })
	adminJSON(t, dir, &sm, "setmaxjobs", "1")
	var w struct {
		Workers []struct{ State string } `json:"workers"`
	}
	adminJSON(t, dir, &w, "workers")
	stopping := 0
	for _, x := range w.Workers {
		if x.State == "stopping" {
			stopping++
		}
	}
	if stopping != 2 {
		t.Errorf("after setmaxjobs 1 with 3 busy workers: %+v, want 2 stopping", w.Workers)
	}
	writeFile(t, filepath.Join(dir, "release"), "", 0o644)
	for _, id := range ids {
		r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", filepath.Join(dir, "out-"+id), id)
		if r.code != 0 {
			t.Errorf("job %s: exit %d\n%s", id, r.code, r.stdout)
		}
	}
	starts := startsOf(dir)
	seen := map[string]int{}
	for _, s := range starts {
		seen[s]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("job %s started %d times", id, seen[id])
		}
	}
	adminJSON(t, dir, &w, "workers")
	if len(w.Workers) != 1 {
		t.Errorf("workers after the surplus left: %+v", w.Workers)
	}
}

// TestResourceGatePauses holds a job while available memory is below an
// unmeetable MIN_AVAILABLE_MEMORY_MB, and says why.
func TestResourceGatePauses(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript),
		"MIN_AVAILABLE_MEMORY_MB = 100000000", "RESOURCE_CHECK_INTERVAL_SECONDS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	id := submitNoWait(t, dir, "client.opts")
	var w struct {
		Paused      bool   `json:"paused"`
		PauseReason string `json:"pause_reason"`
		Workers     []struct{ State string }
	}
	servertest.Eventually(t, 20*time.Second, "pool paused", func() bool {
		adminJSON(t, dir, &w, "workers")
		return w.Paused && len(w.Workers) == 1 && w.Workers[0].State == "paused"
	})
	if !strings.Contains(w.PauseReason, "MIN_AVAILABLE_MEMORY_MB") || w.Workers[0].State != "paused" {
		t.Errorf("workers = %+v, want paused for memory", w)
	}
	r := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	if !strings.Contains(r.stdout, `"state": "queued"`) {
		t.Errorf("job under a paused pool: %s", r.stdout)
	}
	// The pause is logged once, not at every check.
	checkedAt := func() time.Time {
		var st struct {
			Resources struct {
				CheckedAt time.Time `json:"checked_at"`
			} `json:"resources"`
		}
		adminJSON(t, dir, &st, "status")
		return st.Resources.CheckedAt
	}
	first := checkedAt()
	servertest.Eventually(t, 20*time.Second, "two more checks", func() bool {
		return checkedAt().Sub(first) >= 2*time.Second
	})
	log, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	if n := strings.Count(string(log), "workers paused"); n != 1 {
		t.Errorf("the pause was logged %d times, want once", n)
	}
}

func TestAdminAndClientKeysDiffer(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	// The client key on the admin port.
	host, port, _ := strings.Cut(srv.adminAddr, ":")
	writeFile(t, filepath.Join(dir, "wrong-admin.opts"), fmt.Sprintf("SERVER_ADMIN_HOSTNAME = %s\nSERVER_ADMIN_PORT = %s\nSERVER_ADMIN_SHARED_KEY = %s\n", host, port, key), 0o600)
	if r := runRecon(t, dir, "admin", "--opts", "wrong-admin.opts", "status"); r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
		t.Errorf("client key on the admin port: exit %d, %q", r.code, r.stderr)
	}
	// The admin key on the client port.
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	b, _ := os.ReadFile(filepath.Join(dir, "admin.opts"))
	adminKey := strings.TrimSpace(strings.SplitN(strings.Split(string(b), "SERVER_ADMIN_SHARED_KEY =")[1], "\n", 2)[0])
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, adminKey)
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
		t.Errorf("admin key on the client port: exit %d, %q", r.code, r.stderr)
	}
	if r := runRecon(t, dir, "admin", "--opts", "admin.opts", "status"); r.code != 0 {
		t.Errorf("admin key on the admin port: exit %d, %q", r.code, r.stderr)
	}
}
