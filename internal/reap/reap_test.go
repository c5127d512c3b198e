package reap_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/reap"
)

// marked starts `sh -c script` with Env=marker in its environment and
// returns it; the test reaps it at the end.
func marked(t *testing.T, marker, script string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", reap.Env + "=" + marker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// pidFiles waits until each of the files in dir holds a pid, and returns
// them.
func pidFiles(t *testing.T, dir string, names ...string) []int {
	t.Helper()
	var pids []int
	for _, n := range names {
		deadline := time.Now().Add(20 * time.Second)
		for {
			b, err := os.ReadFile(filepath.Join(dir, n))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && strings.HasSuffix(string(b), "\n") {
				pids = append(pids, pid)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no pid written", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return pids
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func randomMarker(t *testing.T) string {
	return "test." + strings.ToLower(rand.Text())
}

// TestKillFindsEscapedProcesses: a plain background child, one that left
// with setsid and a double-forked orphan all carry the marker and are all
// killed; so is a process that keeps forking. A process with a marker that
// merely begins the same way is left alone.
func TestKillFindsEscapedProcesses(t *testing.T) {
	if !reap.Supported {
		t.Skip("no /proc on this system")
	}
	dir := t.TempDir()
	m := randomMarker(t)
	marked(t, m, `
d=$1
sleep 1000 & echo $! > "$d/child.tmp" && mv "$d/child.tmp" "$d/child"
setsid sh -c 'echo $$ > "$1/setsid.tmp"; mv "$1/setsid.tmp" "$1/setsid"; exec sleep 1000' sh "$d" &
sh -c 'sh -c '"'"'echo $$ > "$1/orphan.tmp"; mv "$1/orphan.tmp" "$1/orphan"; exec sleep 1000'"'"' sh "$1" &' sh "$d"
sh -c 'echo $$ > "$1/forker.tmp"; mv "$1/forker.tmp" "$1/forker"; while :; do sleep 1000 & done' sh "$d" &
exec sleep 1000
`, dir)
	other := filepath.Join(dir, "other")
	os.Mkdir(other, 0o700)
	marked(t, m+"x", `echo $$ > "$1/decoy.tmp"; mv "$1/decoy.tmp" "$1/decoy"; exec sleep 1000`, other)

	pids := pidFiles(t, dir, "child", "setsid", "orphan", "forker")
	decoy := pidFiles(t, other, "decoy")[0]
	found, err := reap.Find(reap.Exactly(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !slices.ContainsFunc(found, func(p reap.Process) bool { return p.PID == pid }) {
			t.Errorf("Find did not find process %d", pid)
		}
	}

	killed, err := reap.Kill(context.Background(), reap.Exactly(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d survived Kill", pid)
		}
		if !slices.ContainsFunc(killed, func(p reap.Process) bool { return p.PID == pid }) {
			t.Errorf("Kill did not report process %d", pid)
		}
	}
	if left, _ := reap.Find(reap.Exactly(m)); len(left) != 0 {
		t.Errorf("marked processes left after Kill: %+v", left)
	}
	if !alive(decoy) {
		t.Error("Kill killed a process with another marker")
	}
	for _, p := range killed {
		if p.Marker != m || p.Command == "" {
			t.Errorf("killed %+v: want marker %q and a command", p, m)
		}
		if p.PID == os.Getpid() {
			t.Error("Kill reported the caller itself")
		}
	}
	i := slices.IndexFunc(killed, func(p reap.Process) bool { return p.PID == pids[1] })
	if i >= 0 && !strings.Contains(killed[i].Command, "sleep 1000") {
		t.Errorf("command of the setsid process = %q, want its command line", killed[i].Command)
	}

	// A prefix reaches the decoy too.
	if _, err := reap.Kill(context.Background(), reap.Prefix(m)); err != nil {
		t.Fatal(err)
	}
	if alive(decoy) {
		t.Error("Kill with a prefix left the decoy")
	}
}

// TestKillNothing: with no marked process, Kill returns at once.
func TestKillNothing(t *testing.T) {
	start := time.Now()
	killed, err := reap.Kill(context.Background(), reap.Exactly(randomMarker(t)))
	if err != nil || len(killed) != 0 {
		t.Errorf("Kill = %v, %v; want nothing", killed, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Kill took %v with nothing to kill", d)
	}
}

// TestKillDeadline: a context already done ends Kill with ErrSurvivors
// while a marked process lives.
func TestKillDeadline(t *testing.T) {
	if !reap.Supported {
		t.Skip("no /proc on this system")
	}
	dir := t.TempDir()
	m := randomMarker(t)
	marked(t, m, `echo $$ > "$1/p.tmp"; mv "$1/p.tmp" "$1/p"; exec sleep 1000`, dir)
	pid := pidFiles(t, dir, "p")[0]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := reap.Kill(ctx, reap.Exactly(m)); !errors.Is(err, reap.ErrSurvivors) || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("Kill with a done context = %v, want ErrSurvivors naming %d", err, pid)
	}
}

// BenchmarkKillNothing is the cost Run adds to every job whose script left
// nothing: one scan of /proc.
func BenchmarkKillNothing(b *testing.B) {
	m := reap.Exactly("bench.nothing")
	for b.Loop() {
		if _, err := reap.Kill(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
}
