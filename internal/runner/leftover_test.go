package runner_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/reap"
	"github.com/recon-mri/recon/internal/runner"
)

// TestKillStaleOwnInstanceOnly: KillStale kills the processes of its own
// server instance's runs, whatever their job or attempt, logs each with
// its job and attempt, and leaves those of another instance, even one
// whose name begins the same way.
func TestKillStaleOwnInstanceOnly(t *testing.T) {
	if !reap.Supported {
		t.Skip("no /proc on this system")
	}
	t.Parallel()
	dir := t.TempDir()
	inst := "test-" + strings.ToLower(rand.Text())
	start := func(marker, name string) int {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 1000`, "sh", filepath.Join(dir, name))
		cmd.Env = []string{"PATH=/usr/bin:/bin", reap.Env + "=" + marker}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return readPIDWhenWritten(t, filepath.Join(dir, name))
	}
	own1 := start(runner.Marker(inst, "jobone", 1), "own1")
	own2 := start(runner.Marker(inst, "jobtwo", 3), "own2")
	other := start(runner.Marker(inst+"x", "jobone", 1), "other")

	h := newCapture()
	if err := runner.KillStale(context.Background(), inst, slog.New(h)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, own1)
	waitGone(t, own2)
	if processGone(other) {
		t.Error("KillStale killed a process of another instance")
	}
	for _, want := range []struct {
		pid          int
		job, attempt string
	}{{own1, "jobone", "1"}, {own2, "jobtwo", "3"}} {
		if !slices.ContainsFunc(h.records(), func(r record) bool {
			return r.Level == slog.LevelWarn && r.Attrs["pid"] == int64(want.pid) &&
				r.Attrs["job_id"] == want.job && r.Attrs["attempt"] == want.attempt &&
				strings.Contains(r.Attrs["command"].(string), "sleep 1000")
		}) {
			t.Errorf("no warning for pid %d of job %s attempt %s: %+v", want.pid, want.job, want.attempt, h.records())
		}
	}
	if err := runner.KillStale(context.Background(), "", slog.New(h)); err == nil {
		t.Error("KillStale with no instance: no error")
	}
}

// readPIDWhenWritten waits for a pid file written with a rename.
func readPIDWhenWritten(t *testing.T, path string) int {
	t.Helper()
	waitForFile(t, 20*time.Second, path)
	return readPID(t, path)
}
