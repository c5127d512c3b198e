package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// reconBin is the recon binary built once for the tests in this package.
var reconBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "recon-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reconBin = filepath.Join(dir, "recon")
	out, err := exec.Command("go", "build", "-o", reconBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build recon: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result of one recon command.
type cmdResult struct {
	stdout, stderr string
	code           int
}

// recon runs the binary with args in dir and returns what it printed and
// its exit code. It is bounded in time.
func runRecon(t *testing.T, dir string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, reconBin, args...)
	cmd.Dir = dir
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("recon %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("recon %v did not finish in time; stderr:\n%s", args, se.String())
	}
	return cmdResult{so.String(), se.String(), code}
}

// serverProc is a `recon server` process.
type serverProc struct {
	cmd        *exec.Cmd
	clientAddr string
	adminAddr  string
	stderr     *syncBuffer
	done       chan error
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(x string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(x)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var startedRE = regexp.MustCompile(`clients on (\S+), admin on (\S+),`)

// startServer runs `recon server --opts opts` in dir and waits until it
// says where it listens. The process is stopped when the test ends.
func startServer(t testing.TB, dir, opts string) *serverProc {
	t.Helper()
	cmd := exec.Command(reconBin, "server", "--opts", opts)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	found := make(chan [2]string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			if m := startedRE.FindStringSubmatch(line); m != nil && !sent {
				found <- [2]string{m[1], m[2]}
				sent = true
			}
		}
	}()
	select {
	case a := <-found:
		p.clientAddr, p.adminAddr = a[0], a[1]
	case <-scanDone:
		t.Fatalf("recon server exited before listening:\n%s", p.stderr.String())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("recon server did not start in time")
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serverProc) stop(t testing.TB) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("recon server exit: %v", err)
		}
		p.done <- err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("recon server did not stop within 30 s of SIGTERM")
	}
}

// kill9 kills the server without warning.
func (p *serverProc) kill9(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// serverOpts writes a server config on free loopback ports and returns its
// shared key.
func serverOpts(t testing.TB, dir string, script string, extra ...string) string {
	t.Helper()
	key := keys.MustGenerate().Encode()
	lines := []string{
		"SERVER_HOSTNAME = 127.0.0.1",
		"SERVER_PORT = 0",
		"SHARED_KEY = " + key,
		"SERVER_ADMIN_PORT = 0",
		"SERVER_ADMIN_SHARED_KEY = " + keys.MustGenerate().Encode(),
		"RECON_SCRIPT_PATH = " + script,
		"RECON_SERVER_BASE_PFILE_DIR = data/inputs",
		"RECON_JOB_OUTPUT_BASE_DIR = data/outputs",
		"RECON_SERVER_STATE_DIR = data/state",
		"LOG_FILEPATH = recon.log",
		"MIN_FREE_DISK_MB = 16",
		// Tests share a busy machine: the resource gate must not hold jobs.
		"MAX_CPU_LOAD_PERCENT = 100",
		"MIN_AVAILABLE_MEMORY_MB = 0",
	}
	// An extra line replaces a default line of the same key.
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		k = strings.TrimSpace(k)
		for i, l := range lines {
			if lk, _, _ := strings.Cut(l, "="); strings.TrimSpace(lk) == k {
				lines = append(lines[:i], lines[i+1:]...)
				break
			}
		}
		lines = append(lines, e)
	}
	writeFile(t, filepath.Join(dir, "recon.opts"), strings.Join(lines, "\n")+"\n", 0o600)
	return key
}

// clientOpts writes a minimal client config for addr.
func clientOpts(t *testing.T, path, addr, key string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	writeFile(t, path, fmt.Sprintf("SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\nCLIENT_DOWNLOAD_DIR = downloads\n", host, port, key), 0o600)
}

// submitFile writes name with content into dir and submits it without
// waiting; it returns the job id.
func submitFile(t *testing.T, dir, opts, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, content, 0o644)
	r := runRecon(t, dir, "submit", "--opts", opts, "--no-wait", p)
	if r.code != 0 {
		t.Fatalf("submit %s: exit %d\n%s", name, r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// jobState is the job's state as recon status --json reports it.
func jobState(t *testing.T, dir, opts, id string) string {
	t.Helper()
	r := runRecon(t, dir, "status", "--opts", opts, "--json", id)
	var j struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("status --json %s: exit %d, %v\n%s%s", id, r.code, err, r.stdout, r.stderr)
	}
	return j.State
}

func waitState(t *testing.T, dir, opts, id, want string) {
	t.Helper()
	servertest.Eventually(t, 30*time.Second, "job "+id+" "+want, func() bool { return jobState(t, dir, opts, id) == want })
}

// admin runs recon admin with the test's admin.opts.
func admin(t *testing.T, dir string, args ...string) cmdResult {
	t.Helper()
	return runRecon(t, dir, append([]string{"admin", "--opts", "admin.opts"}, args...)...)
}

// processGone reports whether pid no longer runs (no such process, or a
// zombie not yet reaped).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}
