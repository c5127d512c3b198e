package runner_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/reap"
)

// writeExecutable writes an executable file. It holds syscall.ForkLock for
// reading while the file is open for writing, so that no process forked
// meanwhile by a parallel test inherits the descriptor and makes exec of
// this file fail with "text file busy".
func writeExecutable(t *testing.T, path string, content []byte) {
	t.Helper()
	syscall.ForkLock.RLock()
	err := os.WriteFile(path, content, 0o755)
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
}

// writeScript writes a bash script with the given body into a fresh
// directory and returns its path.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.sh")
	writeExecutable(t, path, []byte("#!/bin/bash\n"+body))
	return path
}

// jobDirs returns a fresh input dir and a (not yet created) output dir.
func jobDirs(t *testing.T) (in, out string) {
	t.Helper()
	job := t.TempDir()
	in = filepath.Join(job, "input")
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	return in, filepath.Join(job, "output")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitForFile waits until path exists and returns its contents.
func waitForFile(t *testing.T, timeout time.Duration, path string) string {
	t.Helper()
	var data []byte
	waitFor(t, timeout, "file "+filepath.Base(path), func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil && len(data) > 0 && data[len(data)-1] == '\n'
	})
	return string(data)
}

// readPID reads a pid written by a script with `echo $! > file`.
func readPID(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the script did not record its grandchild: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		t.Fatalf("bad pid %q in %s", data, path)
	}
	return pid
}

// cgroupsWork reports whether runs get a cgroup here (root, with a
// cgroup2 hierarchy).
func cgroupsWork() bool {
	g, err := reap.NewGroup("probe-" + rand.Text())
	if err != nil {
		return false
	}
	g.Kill(context.Background())
	return true
}

// processGone reports whether pid no longer runs (gone, or a zombie left
// for init to reap).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, 10*time.Second, "process "+strconv.Itoa(pid)+" to end", func() bool { return processGone(pid) })
}

// record is one captured log record, attributes flattened.
type record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

// capture is a slog.Handler that keeps every record.
type capture struct {
	mu    *sync.Mutex
	recs  *[]record
	attrs []slog.Attr
}

func newCapture() *capture {
	return &capture{mu: new(sync.Mutex), recs: new([]record)}
}

func (h *capture) Enabled(context.Context, slog.Level) bool { return true }

func (h *capture) Handle(_ context.Context, r slog.Record) error {
	rec := record{Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *capture) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *capture) WithGroup(string) slog.Handler { return h }

func (h *capture) records() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]record(nil), *h.recs...)
}

// lines returns the logged output lines of one stream.
func (h *capture) lines(stream string) []string {
	var out []string
	for _, r := range h.records() {
		if r.Msg == "script output" && r.Attrs["stream"] == stream {
			out = append(out, r.Attrs["line"].(string))
		}
	}
	return out
}
