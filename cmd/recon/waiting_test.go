package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestQueuedJobSaysWhyItWaits checks that a job held back by the resource
// gate says why wherever a user looks at it: recon status (text and
// --json wait_reason), a waiting recon submit and recon fetch. The server
// wants more available memory than any machine has, so its workers stay
// paused.
func TestQueuedJobSaysWhyItWaits(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript),
		"MIN_AVAILABLE_MEMORY_MB = 1073741824", "RESOURCE_CHECK_INTERVAL_SECONDS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	id := submitFile(t, dir, "client.opts", "a.cfl", "data")

	const want = "queued (position 1): workers paused, available memory "
	var last cmdResult
	servertest.Eventually(t, 30*time.Second, "status says why the job waits", func() bool {
		last = runRecon(t, dir, "status", "--opts", "client.opts", id)
		return strings.Contains(last.stdout, want)
	})
	if !strings.Contains(last.stdout, " MB < 1073741824 MB") {
		t.Errorf("recon status %s:\n%s\nwant the reading against MIN_AVAILABLE_MEMORY_MB", id, last.stdout)
	}
	r := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	var j struct {
		State      string `json:"state"`
		WaitReason string `json:"wait_reason"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if j.State != "queued" || !strings.HasPrefix(j.WaitReason, "workers paused, available memory ") {
		t.Errorf("status --json: state %q, wait_reason %q; want queued and the pause", j.State, j.WaitReason)
	}

	// A waiting fetch and a waiting submit print the same line.
	fetch := startRecon(t, dir, 60*time.Second, "fetch", "--opts", "client.opts", id)
	writeFile(t, filepath.Join(dir, "b.cfl"), "more", 0o644)
	submit := startRecon(t, dir, 60*time.Second, "submit", "--opts", "client.opts", filepath.Join(dir, "b.cfl"))
	servertest.Eventually(t, 30*time.Second, "fetch says why the job waits", func() bool {
		return strings.Contains(fetch.stderr.String(), "job "+id+": "+want)
	})
	servertest.Eventually(t, 30*time.Second, "submit says why the job waits", func() bool {
		return strings.Contains(submit.stderr.String(), ": queued (position 2): workers paused, available memory ")
	})
}
