package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestWatchCommand runs `recon watch` against a real `recon server`: a
// file written into the watched directory comes back as results with a
// summary, the log has one record of the submission with its job id, and
// SIGTERM stops the daemon cleanly.
func TestWatchCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
printf "%s" "${RECON_OPT_METHOD:-}" > "$3/method.txt"
`)
	key := serverOpts(t, dir, script)
	srv := startServer(t, dir, "recon.opts")
	watchOpts(t, dir, srv.clientAddr, key, `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"method": "pics"}`)
	scanner := filepath.Join(dir, "scanner")
	if err := os.Mkdir(scanner, 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, reconBin, "watch", "--opts", "client.opts")
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	var (
		mu     sync.Mutex
		stderr bytes.Buffer
	)
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "recon watch ") && strings.Contains(sc.Text(), "watching ") {
				once.Do(func() { close(started) })
			}
		}
	}()
	errOut := func() string { mu.Lock(); defer mu.Unlock(); return stderr.String() }
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("recon watch exited at once (%v):\n%s", err, errOut())
	case <-ctx.Done():
		t.Fatalf("recon watch did not start:\n%s", errOut())
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()

	raw := strings.Repeat("k-space ", 5000)
	writeFile(t, filepath.Join(scanner, "P12345.7"), raw, 0o644)
	before, err := os.Stat(filepath.Join(scanner, "P12345.7"))
	if err != nil {
		t.Fatal(err)
	}

	summary, groupDir := waitWatchSummary(t, dir)
	if summary.Status != "done" || summary.State != "succeeded" || summary.JobID == "" || filepath.Base(groupDir) != summary.Group {
		t.Errorf("summary %+v in %s", summary, groupDir)
	}
	if b, err := os.ReadFile(filepath.Join(groupDir, "P12345.7.out")); err != nil || string(b) != raw {
		t.Errorf("result P12345.7.out: %v (%d bytes)", err, len(b))
	}
	if b, _ := os.ReadFile(filepath.Join(groupDir, "method.txt")); string(b) != "pics" {
		t.Errorf("CLIENT_DAEMON_RECON_OPTIONS_JSON option arrived as %q", b)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("recon watch after SIGTERM: %v\n%s", err, errOut())
		}
	case <-ctx.Done():
		t.Fatalf("recon watch did not stop after SIGTERM:\n%s", errOut())
	}
	if !strings.Contains(errOut(), "recon watch: stopped") {
		t.Errorf("stderr does not say it stopped:\n%s", errOut())
	}

	// The log: JSON records, one submission with the job id, a clean stop.
	logData, err := os.ReadFile(filepath.Join(dir, "watch.log"))
	if err != nil {
		t.Fatal(err)
	}
	var submitted, stopped int
	for _, line := range strings.Split(strings.TrimSpace(string(logData)), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch r["msg"] {
		case "group submitted":
			submitted++
			if r["job_id"] != summary.JobID || r["group"] != summary.Group {
				t.Errorf("submission record %v, want job %s group %s", r, summary.JobID, summary.Group)
			}
		case "watch stopped":
			stopped++
		}
	}
	if submitted != 1 || stopped != 1 {
		t.Errorf("log has %d submission and %d stop records, want 1 each:\n%s", submitted, stopped, logData)
	}
	after, err := os.Stat(filepath.Join(scanner, "P12345.7"))
	if err != nil || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("scanner file changed: %v", err)
	}
	q := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
	if n := strings.Count(q.stdout, `"job_id"`); n != 1 {
		t.Errorf("server has %d jobs, want 1:\n%s", n, q.stdout)
	}
}

// TestWatchNeedsDirectory: without CLIENT_WATCH_DIRECTORY, recon watch
// says what is missing and exits 1.
func TestWatchNeedsDirectory(t *testing.T) {
	dir := t.TempDir()
	clientOpts(t, filepath.Join(dir, "client.opts"), "127.0.0.1:1", keys.MustGenerate().Encode())
	r := runRecon(t, dir, "watch", "--opts", "client.opts")
	if r.code != exitFailure || !strings.Contains(r.stderr, "CLIENT_WATCH_DIRECTORY is not set") {
		t.Errorf("exit %d, stderr %q; want 1 and a word about CLIENT_WATCH_DIRECTORY", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "watch_state")); err == nil {
		t.Error("a state directory was created although the config is incomplete")
	}
}

// watchSummary is the summary file the watch daemon writes beside a
// group's results.
type watchSummary struct {
	Group  string `json:"group"`
	Status string `json:"status"`
	JobID  string `json:"job_id"`
	State  string `json:"state"`
}

// waitWatchSummary waits for the one group's summary under dir/downloads
// and returns it with the group's download directory.
func waitWatchSummary(t *testing.T, dir string) (summary watchSummary, groupDir string) {
	t.Helper()
	servertest.Eventually(t, 40*time.Second, "results and summary downloaded", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "downloads", "*", "recon-summary.json"))
		if len(m) != 1 {
			return false
		}
		b, err := os.ReadFile(m[0])
		if err != nil || json.Unmarshal(b, &summary) != nil {
			return false
		}
		groupDir = filepath.Dir(m[0])
		return true
	})
	return summary, groupDir
}

// watchOpts writes dir/client.opts for `recon watch` against the server at
// addr: the client keys, the watched directory "scanner", short delays, state
// in watch_state and the log in watch.log, then the extra lines.
func watchOpts(t *testing.T, dir, addr, key string, extra ...string) {
	t.Helper()
	clientOpts(t, filepath.Join(dir, "client.opts"), addr, key)
	lines := append([]string{
		"CLIENT_WATCH_DIRECTORY = scanner",
		"CLIENT_DAEMON_POLL_INTERVAL = 0.1",
		"CLIENT_DAEMON_STABILITY_DELAY = 0.2",
		"CLIENT_DAEMON_GROUPING_TIMEOUT = 0.3",
		"CLIENT_DAEMON_STATE_DIR = watch_state",
		"CLIENT_DAEMON_LOG_FILEPATH = watch.log",
	}, extra...)
	f, err := os.OpenFile(filepath.Join(dir, "client.opts"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
}
