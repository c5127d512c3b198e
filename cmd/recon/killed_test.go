package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestClientKilledMidFileNoResume kills a real `recon submit` process
// (SIGKILL) in the middle of a large file on a server that keeps nothing
// for resuming (UPLOAD_RESUME_HOURS = 0): no job is queued, and nothing of
// the upload is left, neither under RECON_SERVER_BASE_PFILE_DIR nor in the
// state dir.
func TestClientKilledMidFileNoResume(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "UPLOAD_RESUME_HOURS = 0")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	inputs := filepath.Join(dir, "data", "inputs")
	state := filepath.Join(dir, "data", "state")
	outputs := filepath.Join(dir, "data", "outputs")

	// 2 GiB, sparse: far more than is sent before the kill, and cheap to
	// read.
	big := filepath.Join(dir, "big.7")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cmd := exec.Command(reconBin, "submit", "--opts", "client.opts", "--no-wait", big)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// The server has received bytes of the file: its part is not empty.
	var part string
	servertest.Eventually(t, 30*time.Second, "the server receives bytes of the file", func() bool {
		m, _ := filepath.Glob(filepath.Join(inputs, ".incoming-*", "part:*"))
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
				part = p
				return true
			}
		}
		return false
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed = true
	if fi, err := os.Stat(part); err == nil && fi.Size() >= 2<<30 {
		t.Fatalf("the whole file arrived before the kill: make it larger")
	}

	logPath := filepath.Join(dir, "recon.log")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := walkFiles(t, inputs)
		if len(left) == 0 && len(logMessages(t, logPath, "upload failed")) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the kill the server has not ended the upload (log: %d \"upload failed\") or removed what it received: %v",
				len(logMessages(t, logPath, "upload failed")), left)
		}
	}

	// Nothing under the inputs dir, not even an empty upload dir.
	if es, err := os.ReadDir(inputs); err != nil || len(es) != 0 {
		t.Errorf("inputs dir after the broken upload: %v (%v)", es, err)
	}
	if files := walkFiles(t, outputs); len(files) != 0 {
		t.Errorf("outputs dir after the broken upload: %v", files)
	}
	// The state dir holds the job database, its reserve for a full disk, the
	// audit trail's head and the lock, nothing else.
	allowed := map[string]bool{"jobs.db": true, "jobs.db-wal": true, "jobs.db-shm": true, "jobs.db.reserve": true,
		"audit.db": true, "audit.db-wal": true, "audit.db-shm": true, "lock": true}
	for _, p := range walkFiles(t, state) {
		if !allowed[p] {
			t.Errorf("state dir holds %s after the broken upload", p)
		}
	}
	for _, msg := range []string{"upload broken; kept for resuming", "job queued"} {
		if n := len(logMessages(t, logPath, msg)); n != 0 {
			t.Errorf("server log has %d %q record(s), want none", n, msg)
		}
	}

	// No job: not in the queue, none counted in the status.
	r := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
	var q struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); r.code != 0 || err != nil || len(q.Jobs) != 0 {
		t.Errorf("queue after the broken upload (exit %d, %v): %s", r.code, err, r.stdout)
	}
	r = runRecon(t, dir, "status", "--opts", "client.opts", "--json")
	var st struct {
		Jobs map[string]int `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("status after the broken upload (exit %d, %v): %s", r.code, err, r.stdout)
	}
	for state, n := range st.Jobs {
		if n != 0 {
			t.Errorf("status counts %d %s job(s), want none: %s", n, state, r.stdout)
		}
	}
}

// walkFiles lists everything under root (files, dirs, links), as paths
// relative to root; a missing root has nothing.
func walkFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while walking
			}
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// logMessages returns the JSON records of the server log with message msg.
func logMessages(t *testing.T, path, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(b), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}
