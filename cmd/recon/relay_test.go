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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// relayProc is a `recon relay` process.
type relayProc struct {
	cmd        *exec.Cmd
	clientAddr string
	adminAddr  string
	mu         chan struct{} // guards stderr: a one-slot semaphore
	stderr     bytes.Buffer
	done       chan error
	exited     bool
}

func (p *relayProc) output() string {
	p.mu <- struct{}{}
	defer func() { <-p.mu }()
	return p.stderr.String()
}

// startRelayProc runs `recon relay --opts opts` in dir and waits until it
// says where it listens. It is stopped with SIGTERM when the test ends.
func startRelayProc(t *testing.T, dir, opts string) *relayProc {
	t.Helper()
	cmd := exec.Command(reconBin, "relay", "--opts", opts)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, mu: make(chan struct{}, 1), done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	found := make(chan [2]string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.mu <- struct{}{}
			p.stderr.WriteString(line + "\n")
			<-p.mu
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
		t.Fatalf("recon relay exited before listening:\n%s", p.output())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("recon relay did not start in time")
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	if p.exited {
		return
	}
	p.exited = true
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("recon relay exit after SIGTERM: %v\n%s", err, p.output())
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("recon relay did not stop within 30 s of SIGTERM")
	}
}

// peakRSS is the process's peak resident set size (VmHWM), in bytes.
func (p *relayProc) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc/PID/status")
	return 0
}

// relayOpts writes a relay.opts in dir for the backends and returns the
// client and admin keys.
func relayOpts(t *testing.T, dir string, backends []string, backendKey string, extra ...string) (clientKey, adminKey string) {
	t.Helper()
	clientKey, adminKey = keys.MustGenerate().Encode(), keys.MustGenerate().Encode()
	lines := []string{
		"RELAY_HOSTNAME = 127.0.0.1",
		"RELAY_PORT = 0",
		"RELAY_ADMIN_PORT = 0",
		"SHARED_KEY_RELAY_TO_CLIENTS = " + clientKey,
		"RELAY_ADMIN_SHARED_KEY = " + adminKey,
		"BACKEND_SHARED_KEY = " + backendKey,
		"BACKEND_SERVERS = " + strings.Join(backends, ","),
		"BACKEND_HEALTH_INTERVAL_SECONDS = 0.25",
		"TRUSTED_CLIENT_IPS = 127.0.0.1",
		"RELAY_STATE_DIR = relay_state",
		"LOG_FILEPATH = relay.log",
	}
	lines = append(lines, extra...)
	writeFile(t, filepath.Join(dir, "relay.opts"), strings.Join(lines, "\n")+"\n", 0o600)
	return clientKey, adminKey
}

// relayAdminOpts writes a config for recon relay-admin.
func relayAdminOpts(t *testing.T, path, addr, key string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	writeFile(t, path, fmt.Sprintf("RELAY_ADMIN_HOSTNAME = %s\nRELAY_ADMIN_PORT = %s\nRELAY_ADMIN_SHARED_KEY = %s\n", host, port, key), 0o600)
}

// TestRelayCLI runs the client commands against a relay in front of two
// servers, exactly as against a server, and recon relay-admin against it.
func TestRelayCLI(t *testing.T) {
	dir := t.TempDir()
	key := keys.MustGenerate().Encode()
	var backends []string
	var servers []*servertest.Server
	for range 2 {
		s := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
		backends = append(backends, s.Addr().String())
		servers = append(servers, s)
	}
	clientKey, adminKey := relayOpts(t, dir, backends, key)
	rp := startRelayProc(t, dir, "relay.opts")
	if !strings.Contains(rp.output(), "backends 2 (2 healthy)") {
		t.Errorf("relay start line does not report 2 healthy backends:\n%s", rp.output())
	}
	clientOpts(t, filepath.Join(dir, "client.opts"), rp.clientAddr, clientKey)
	relayAdminOpts(t, filepath.Join(dir, "admin.opts"), rp.adminAddr, adminKey)

	r := runRecon(t, dir, "status", "--opts", "client.opts", "--json")
	var st map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("recon status through the relay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, ok := st["uptime_seconds"].(float64); !ok {
		t.Errorf("status --json through the relay has no uptime_seconds: %s", r.stdout)
	}

	in := filepath.Join(dir, "P00000.7")
	writeFile(t, in, strings.Repeat("k-space ", 50000), 0o644)
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--json", "--output", "out", "P00000.7")
	if r.code != 0 {
		t.Fatalf("recon submit through the relay: exit %d\n%s", r.code, r.stderr)
	}
	var res struct {
		JobID   string `json:"job_id"`
		State   string `json:"state"`
		Backend string `json:"backend"`
		Results []struct {
			Name, SHA256, Path string
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("submit --json: %v\n%s", err, r.stdout)
	}
	if res.State != "succeeded" || len(res.Results) != 1 || sha(t, res.Results[0].Path) != sha(t, in) {
		t.Fatalf("submit through the relay: %+v", res)
	}
	if res.Backend == "" {
		t.Errorf("submit --json through the relay names no backend: %s", r.stdout)
	}

	// --no-wait, status, fetch: the second job (--new: the same file
	// again) goes to the other backend.
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "--new", "P00000.7")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" {
		t.Fatalf("submit --no-wait through the relay: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	r = runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out2", id)
	if r.code != 0 || sha(t, filepath.Join(dir, "out2", "P00000.7.out")) != sha(t, in) {
		t.Fatalf("fetch through the relay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	var job map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &job) != nil || job["state"] != "succeeded" {
		t.Fatalf("status %s through the relay: exit %d\n%s%s", id, r.code, r.stdout, r.stderr)
	}
	if job["backend"] == res.Backend || job["backend"] == "" {
		t.Errorf("two jobs on an idle relay: both on %v", res.Backend)
	}
	r = runRecon(t, dir, "status", "--opts", "client.opts", "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	if r.code == 0 || !strings.Contains(r.stderr, "no job") {
		t.Errorf("status of an unknown job through the relay: exit %d, %q", r.code, r.stderr)
	}
	r = runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
	var q struct {
		Jobs []struct {
			JobID   string `json:"job_id"`
			Backend string `json:"backend"`
		} `json:"jobs"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &q) != nil || len(q.Jobs) != 2 {
		t.Fatalf("queue --json through the relay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, j := range q.Jobs {
		if j.Backend == "" {
			t.Errorf("queue through the relay: job %s has no backend label", j.JobID)
		}
	}

	// relay-admin, JSON.
	r = runRecon(t, dir, "relay-admin", "status", "--opts", "admin.opts", "--json")
	var rst map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rst) != nil {
		t.Fatalf("relay-admin status --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, k := range []string{"uptime_seconds", "version", "clients_connected", "clients_total", "jobs_relayed", "bytes_in", "bytes_out"} {
		if _, ok := rst[k]; !ok {
			t.Errorf("relay-admin status --json has no %s: %s", k, r.stdout)
		}
	}
	if rst["jobs_relayed"] != float64(2) {
		t.Errorf("relay-admin status: jobs_relayed %v, want 2", rst["jobs_relayed"])
	}
	r = runRecon(t, dir, "relay-admin", "backends", "--opts", "admin.opts", "--json")
	var bs struct {
		Backends []map[string]any `json:"backends"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &bs) != nil || len(bs.Backends) != 2 {
		t.Fatalf("relay-admin backends --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for i, b := range bs.Backends {
		if b["address"] != backends[i] || b["healthy"] != true {
			t.Errorf("relay-admin backends: %v, want %s healthy", b, backends[i])
		}
		for _, k := range []string{"queued", "running", "last_check", "latency_seconds", "jobs_placed"} {
			if _, ok := b[k]; !ok {
				t.Errorf("relay-admin backends --json: backend has no %s: %v", k, b)
			}
		}
	}
	r = runRecon(t, dir, "relay-admin", "clients", "--opts", "admin.opts", "--json")
	var cl map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &cl) != nil {
		t.Fatalf("relay-admin clients --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, ok := cl["clients"].([]any); !ok {
		t.Errorf("relay-admin clients --json has no clients list: %s", r.stdout)
	}

	// relay-admin, text.
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"status", []string{"relay version", "uptime", "clients", "backends        2 of 2 healthy"}},
		{"backends", []string{"ADDRESS", "HEALTH", "LAST CHECK", backends[0], backends[1], "up"}},
		{"clients", []string{"no clients connected"}},
	} {
		r := runRecon(t, dir, "relay-admin", tc.cmd, "--opts", "admin.opts")
		for _, w := range tc.want {
			if r.code != 0 || !strings.Contains(r.stdout, w) {
				t.Errorf("relay-admin %s: exit %d, output does not contain %q:\n%s%s", tc.cmd, r.code, w, r.stdout, r.stderr)
			}
		}
	}
	if r := runRecon(t, dir, "relay-admin", "--opts", "admin.opts"); r.code != exitUsage {
		t.Errorf("relay-admin without a command: exit %d, want %d", r.code, exitUsage)
	}

	// Wrong keys are refused: a random key, the backends' key, and the
	// client key at the admin port.
	clientOpts(t, filepath.Join(dir, "wrong.opts"), rp.clientAddr, keys.MustGenerate().Encode())
	clientOpts(t, filepath.Join(dir, "backendkey.opts"), rp.clientAddr, key)
	relayAdminOpts(t, filepath.Join(dir, "clientkey-admin.opts"), rp.adminAddr, clientKey)
	for _, args := range [][]string{
		{"status", "--opts", "wrong.opts"},
		{"status", "--opts", "backendkey.opts"},
		{"relay-admin", "status", "--opts", "clientkey-admin.opts"},
	} {
		if r := runRecon(t, dir, args...); r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
			t.Errorf("recon %v: exit %d, stderr %q; want authentication failed", args, r.code, r.stderr)
		}
	}

	// With a backend down, queue says whose jobs are missing.
	servers[1].Stop(t)
	var down struct {
		Jobs        []map[string]any `json:"jobs"`
		Unavailable []string         `json:"unavailable"`
	}
	servertest.Eventually(t, 20*time.Second, "queue --json names the stopped backend", func() bool {
		r := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
		down.Unavailable = nil
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &down) == nil && slices.Equal(down.Unavailable, backends[1:])
	})
	if r := runRecon(t, dir, "queue", "--opts", "client.opts"); r.code != 0 ||
		!strings.Contains(r.stderr, "backends down, their jobs are not listed: "+backends[1]) {
		t.Errorf("queue with a backend down: exit %d, stderr %q", r.code, r.stderr)
	}

	rp.stop(t)
	if out := rp.output(); !strings.Contains(out, "recon relay: stopped") {
		t.Errorf("relay did not report a clean stop:\n%s", out)
	}
}

// TestRelayFreshConfig: a missing relay.opts is written with fresh keys, and
// the relay refuses to start until BACKEND_SHARED_KEY is set.
func TestRelayFreshConfig(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"relay", "--help"}, {"relay-admin", "--help"}, {"relay-admin", "backends", "--help"}} {
		if h := runRecon(t, dir, args...); h.code != 0 || !strings.Contains(h.stdout, "--opts") {
			t.Errorf("recon %v (exit %d) does not explain --opts:\n%s", args, h.code, h.stdout)
		}
	}
	r := runRecon(t, dir, "relay", "--opts", "relay.opts")
	if r.code == 0 {
		t.Fatal("relay started without BACKEND_SHARED_KEY")
	}
	for _, want := range []string{"wrote a new relay config with fresh keys", "BACKEND_SHARED_KEY is not set"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "relay.opts"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("fresh relay.opts has mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(filepath.Join(dir, "relay.opts"))
	for _, k := range []string{"SHARED_KEY_RELAY_TO_CLIENTS", "RELAY_ADMIN_SHARED_KEY"} {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, k+" = "); ok {
				if _, err := keys.Parse(v); err != nil {
					t.Errorf("fresh %s is not a key: %v", k, err)
				}
				if strings.Contains(r.stderr, v) {
					t.Errorf("the value of %s appears on stderr", k)
				}
			}
		}
	}
}

// TestRelayRefusesReusedKeys: the same key for two roles stops the relay.
func TestRelayRefusesReusedKeys(t *testing.T) {
	dir := t.TempDir()
	k := keys.MustGenerate().Encode()
	writeFile(t, filepath.Join(dir, "relay.opts"), "RELAY_PORT = 0\nRELAY_ADMIN_PORT = 0\n"+
		"SHARED_KEY_RELAY_TO_CLIENTS = "+k+"\nRELAY_ADMIN_SHARED_KEY = "+keys.MustGenerate().Encode()+"\nBACKEND_SHARED_KEY = "+k+"\n", 0o600)
	r := runRecon(t, dir, "relay", "--opts", "relay.opts")
	if r.code == 0 || !strings.Contains(r.stderr, "SHARED_KEY_RELAY_TO_CLIENTS and BACKEND_SHARED_KEY are the same key") {
		t.Errorf("reused key: exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, k) {
		t.Error("stderr shows the key value")
	}
}

// TestRelayLargeFileFlatMemory sends a large file through a relay process
// to a server process: the relay's peak RSS stays small whatever the size.
func TestRelayLargeFileFlatMemory(t *testing.T) {
	const size = 256 << 20
	dir := t.TempDir()
	sdir := filepath.Join(dir, "server")
	os.Mkdir(sdir, 0o700)
	key := serverOpts(t, sdir, servertest.WriteScript(t, sdir, "s.sh", "#!/bin/sh\nexit 0\n"))
	srv := startServer(t, sdir, "recon.opts")
	clientKey, _ := relayOpts(t, dir, []string{srv.clientAddr}, key)
	rp := startRelayProc(t, dir, "relay.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), rp.clientAddr, clientKey)
	big := filepath.Join(dir, "big.7")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for range size >> 20 {
		f.Write(chunk)
	}
	f.Close()
	before := rp.peakRSS(t)
	start := time.Now()
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "big.7")
	elapsed := time.Since(start)
	if r.code != 0 {
		t.Fatalf("submit of %d MiB through the relay: exit %d\n%s", size>>20, r.code, r.stderr)
	}
	peak := rp.peakRSS(t)
	t.Logf("%d MiB through the relay in %v (%.0f MB/s, whole command); relay peak RSS %.1f MiB (%.1f MiB before)",
		size>>20, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6, float64(peak)/(1<<20), float64(before)/(1<<20))
	if peak > 64<<20 {
		t.Errorf("relay peak RSS %.1f MiB after a %d MiB upload, want at most 64 MiB", float64(peak)/(1<<20), size>>20)
	}
}

// TestRelayProcessKilled kills a real `recon relay` with SIGKILL in the
// middle of an upload: the client's submission fails; a relay restarted on
// the same state takes the retry with the same submission id, and the
// submission is one job on the backends.
func TestRelayProcessKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	key := keys.MustGenerate().Encode()
	var backends []*servertest.Server
	var addrs []string
	for range 2 {
		s := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
		backends = append(backends, s)
		addrs = append(addrs, s.Addr().String())
	}
	clientKey, _ := relayOpts(t, dir, addrs, key)
	rp := startRelayProc(t, dir, "relay.opts")

	in := filepath.Join(dir, "big.7")
	writeFile(t, in, strings.Repeat("k-space!", 4<<20), 0o600) // 32 MiB
	const sid = "relay-killed"
	var once sync.Once
	// Progress runs in the send path: killing on its first call stops the
	// relay before the rest is sent (a later mark could come too late, as
	// Progress is throttled).
	kill := func(done, total int64) {
		if done > 0 && done < total {
			once.Do(func() {
				rp.cmd.Process.Kill()
				<-rp.done
				rp.exited = true
			})
		}
	}
	c, err := client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid, Progress: kill, Reconnects: -1}); err == nil {
		t.Fatal("a submission through a relay killed mid-upload succeeded")
	}
	c.Close()

	rp = startRelayProc(t, dir, "relay.opts")
	c, err = client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid})
	if err != nil {
		t.Fatalf("retry through the restarted relay: %v", err)
	}
	if j, err := c.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("retried job: %+v, %v", j, err)
	}
	n := 0
	for _, s := range backends {
		bc := s.Dial(t)
		q, err := bc.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range q {
			if j.SubmissionID == sid {
				n++
			}
		}
		servertest.Eventually(t, 20*time.Second, "no interrupted upload on "+s.Addr().String(), func() bool {
			m, _ := filepath.Glob(filepath.Join(s.Config.InputBaseDir, ".incoming-*"))
			return len(m) == 0
		})
	}
	if n != 1 {
		t.Errorf("submission %s is %d jobs on the backends, want 1", sid, n)
	}
}
