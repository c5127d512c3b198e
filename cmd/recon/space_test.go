package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestAdminStatusShowsSpace runs a server with KEEP_FAILED_OUTPUTS = true
// whose script writes 1 MiB and fails, holds an upload of 5 MiB open, and
// checks that recon admin status shows how the space is held: in the
// table and in --json.
func TestAdminStatusShowsSpace(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "fail.sh", `#!/bin/sh
head -c 1048576 /dev/zero > "$3/partial.raw"
exit 1
`)
	key := serverOpts(t, dir, script, "KEEP_FAILED_OUTPUTS = true")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)

	// Not waited for: recon submit would download the failed job's output.
	submitNoWait(t, dir, "client.opts")
	servertest.Eventually(t, 20*time.Second, "the job fails", func() bool {
		var st struct {
			Jobs map[string]int `json:"jobs"`
		}
		adminJSON(t, dir, &st, "status")
		return st.Jobs["failed"] == 1
	})

	// An upload in progress: announced, not a byte sent.
	k, _ := keys.Parse(key)
	up, err := secure.Dial(t.Context(), srv.clientAddr, secure.Config{Key: k, Role: secure.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	if err := protocol.WriteMessage(up, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "big.7", Size: 5 << 20}}}); err != nil {
		t.Fatal(err)
	}
	m, err := protocol.ReadMessage(up)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
		t.Fatalf("upload refused: %v", err)
	}

	var st struct {
		Space protocol.SpaceUse `json:"space"`
	}
	adminJSON(t, dir, &st, "status")
	sp := st.Space
	if sp.Uploads != 1 || sp.ReservedBytes != 5<<20 || sp.Results != 1 || sp.ResultBytes != 1<<20 ||
		sp.FailedOutputs != 1 || sp.FailedOutputBytes != 1<<20 || !sp.KeepFailedOutputs ||
		sp.MaxReservedBytesPerClient <= 0 || sp.MaxKeptUploadBytesPerClient <= 0 || sp.MaxKeptUploadBytes <= 0 {
		t.Errorf("admin status --json space = %+v", sp)
	}
	r := runRecon(t, dir, "admin", "--opts", "admin.opts", "status")
	for _, want := range []string{
		"uploads in progress: 1, 5.0 MiB reserved",
		"kept uploads: 0, 0 B",
		"results waiting: 1, 1.0 MiB; of failed jobs: 1, 1.0 MiB (kept: KEEP_FAILED_OUTPUTS)",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("admin status does not show %q: exit %d\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}
}

// TestSubmitAfterKeptUploadRemoved breaks an upload with a submission id
// on a server that keeps no broken upload over 1 KiB per client: the
// upload is removed as soon as it is kept. recon submit with the same
// submission id then sends every file again and says why.
func TestSubmitAfterKeptUploadRemoved(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "copy.sh", servertest.CopyScript), "MAX_KEPT_UPLOAD_BYTES_PER_CLIENT = 1KiB")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)

	data := strings.Repeat("x", 256<<10)
	in := filepath.Join(dir, "P1.7")
	writeFile(t, in, data, 0o644)
	k, _ := keys.Parse(key)
	up, err := secure.Dial(t.Context(), srv.clientAddr, secure.Config{Key: k, Role: secure.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	sub := protocol.Submit{SubmissionID: "evicted-1", Files: []protocol.FileInfo{{Name: "P1.7", Size: int64(len(data))}}}
	if err := protocol.WriteMessage(up, protocol.TypeSubmit, sub); err != nil {
		t.Fatal(err)
	}
	if m, err := protocol.ReadMessage(up); err != nil || m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}) != nil {
		t.Fatalf("upload refused: %v", err)
	}
	if _, err := up.Write([]byte(data[:100<<10])); err != nil {
		t.Fatal(err)
	}
	up.Close()
	servertest.Eventually(t, 20*time.Second, "the kept upload is removed", func() bool {
		return len(servertest.LogRecords(t, filepath.Join(dir, "recon.log"),
			"kept upload removed: over the space kept for broken uploads (MAX_KEPT_UPLOAD_BYTES_PER_CLIENT, MAX_KEPT_UPLOAD_BYTES)")) == 1
	})

	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--submission-id", "evicted-1", in)
	if r.code != 0 || !strings.Contains(r.stderr, "note from the server: the part of this upload the server had kept for resuming was removed") ||
		!strings.Contains(r.stderr, "sent again from the start") {
		t.Errorf("submit after the kept upload was removed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestFailedAfterCrashLeavesNoOutputs kills the server (SIGKILL) while a
// job runs with MAX_JOB_ATTEMPTS = 1, after its script wrote some output:
// after the restart the job has failed for too many attempts, and neither
// its outputs nor an empty outputs/<id> folder are left.
func TestFailedAfterCrashLeavesNoOutputs(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
head -c 65536 /dev/zero > "$3/partial.raw"
echo "$RECON_JOB_ID" > "`+dir+`/started"
while [ ! -e "`+dir+`/release" ]; do sleep 0.05; done
`)
	t.Cleanup(func() { writeFile(t, filepath.Join(dir, "release"), "", 0o644) })
	key := serverOpts(t, dir, script, "MAX_JOB_ATTEMPTS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	id := submitNoWait(t, dir, "client.opts")
	servertest.Eventually(t, 20*time.Second, "the job runs", func() bool {
		_, err := os.Stat(filepath.Join(dir, "started"))
		return err == nil
	})
	srv.kill9(t)

	srv2 := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv2.clientAddr, key)
	st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	if !strings.Contains(st.stdout, `"state": "failed"`) {
		t.Fatalf("job after the crash: %s%s", st.stdout, st.stderr)
	}
	if _, err := os.Lstat(filepath.Join(dir, "data", "outputs", id)); err == nil {
		t.Error("the failed job's outputs/<id> folder is left")
	}
}
