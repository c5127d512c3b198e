package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestJobKilledMaxAttemptsFails kills (SIGKILL) a real server while its job
// runs, MAX_JOB_ATTEMPTS = 2 times, restarting it on the same data each
// time: the job then ends failed, not run again, with an error that says
// so plainly, which status and fetch show.
func TestJobKilledMaxAttemptsFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	if err := os.Mkdir(gate, 0o700); err != nil {
		t.Fatal(err)
	}
	key := serverOpts(t, dir, heldScript(t, gate), "MAX_JOB_ATTEMPTS = 2")
	srv := startServer(t, dir, "recon.opts")
	_, port, _ := strings.Cut(srv.clientAddr, ":")
	setOpt(t, filepath.Join(dir, "recon.opts"), "SERVER_PORT", port) // the same address after a restart
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	writeFile(t, filepath.Join(dir, "hold.7"), "held scan", 0o644)
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "hold.7")
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	type job struct {
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
		Error    string `json:"error"`
	}
	status := func() job {
		t.Helper()
		r := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
		var j job
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil {
			t.Fatalf("status %s: exit %d\n%s%s", id, r.code, r.stdout, r.stderr)
		}
		return j
	}
	for attempt := 1; attempt <= 2; attempt++ {
		servertest.Eventually(t, 30*time.Second, fmt.Sprintf("attempt %d runs", attempt), func() bool {
			j := status()
			return j.State == "running" && j.Attempts == attempt
		})
		srv.kill9(t)
		srv = startServer(t, dir, "recon.opts")
	}
	const want = "the server stopped while the job ran, twice (MAX_JOB_ATTEMPTS = 2); the job is not run again"
	if j := status(); j.State != "failed" || j.Attempts != 2 || j.Error != want {
		t.Errorf("after %d kills: %+v; want failed after 2 attempts with error %q", 2, j, want)
	}
	// It is not run again: released now, it stays failed.
	writeFile(t, filepath.Join(gate, "release-"+id), "", 0o644)
	r = runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out", id)
	if r.code != exitJobFailed || !strings.Contains(r.stdout, "error      "+want) {
		t.Errorf("fetch of the job killed MAX_JOB_ATTEMPTS times: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d and the error", r.code, r.stdout, r.stderr, exitJobFailed)
	}
	if j := status(); j.State != "failed" || j.Attempts != 2 {
		t.Errorf("the failed job later: %+v; want still failed after 2 attempts", j)
	}
}
