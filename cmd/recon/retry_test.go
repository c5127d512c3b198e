package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// reconProc is a recon client command running in the background.
type reconProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	code           int
}

// syncWriter adapts a syncBuffer to io.Writer.
type syncWriter struct{ b *syncBuffer }

func (w syncWriter) Write(p []byte) (int, error) { w.b.WriteString(string(p)); return len(p), nil }

// startRecon runs recon with args in dir in the background, bounded by
// limit; it is killed when the test ends.
func startRecon(t *testing.T, dir string, limit time.Duration, args ...string) *reconProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, reconBin, args...)
	cmd.Dir = dir
	p := &reconProc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = syncWriter{p.stdout}, syncWriter{p.stderr}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer cancel()
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() >= 0:
			p.code = ee.ExitCode()
		default:
			p.code = -1 // killed: by the time limit or the cleanup
		}
	}()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// wait waits for the command to end and returns its exit code.
func (p *reconProc) wait(t *testing.T) int {
	t.Helper()
	<-p.done
	return p.code
}

// TestSubmitWaitsForServer runs `recon submit` against a port where no
// server listens yet, and starts the server only once the client has
// failed to connect and said it tries again: the submit then succeeds.
// With --reconnects 0 it fails at once, saying why.
func TestSubmitWaitsForServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	// A port that was free a moment ago, held by no one now: a server
	// started there and stopped.
	srv := startServer(t, dir, "recon.opts")
	addr := srv.clientAddr
	srv.stop(t)
	_, port, _ := strings.Cut(addr, ":")
	setOpt(t, filepath.Join(dir, "recon.opts"), "SERVER_PORT", port)
	clientOpts(t, filepath.Join(dir, "client.opts"), addr, key)
	writeFile(t, filepath.Join(dir, "scan.7"), strings.Repeat("scan ", 4000), 0o644)

	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--reconnects", "0", "--output", "out0", "scan.7")
	if r.code != 1 || !strings.Contains(r.stderr, "connection refused") || strings.Contains(r.stderr, "trying again") {
		t.Errorf("submit --reconnects 0 with no server: exit %d, stderr %q; want 1, connection refused, no retry", r.code, r.stderr)
	}

	p := startRecon(t, dir, 90*time.Second, "submit", "--opts", "client.opts", "--json", "--output", "out", "scan.7")
	servertest.Eventually(t, 30*time.Second, "the client's first failed connect", func() bool {
		return strings.Contains(p.stderr.String(), "connection refused; trying again in 1s (attempt 1 of 5)")
	})
	startServer(t, dir, "recon.opts")
	if code := p.wait(t); code != 0 {
		t.Fatalf("submit with the server started after it: exit %d\nstderr:\n%s", code, p.stderr.String())
	}
	var res struct {
		State   string                  `json:"state"`
		Results []struct{ Path string } `json:"results"`
	}
	if err := json.Unmarshal([]byte(p.stdout.String()), &res); err != nil || res.State != "succeeded" || len(res.Results) != 1 ||
		sha(t, res.Results[0].Path) != sha(t, filepath.Join(dir, "scan.7")) {
		t.Errorf("submit with the server started after it: %s (%v); want succeeded with the result", p.stdout.String(), err)
	}
}

// TestRefusedHandshakeNamesCauses checks what `recon submit` says when the
// server closes the handshake without a word: the three causes it cannot
// tell apart (a wrong key or port, an address not allowed, a busy server),
// after trying again twice, as a busy server may pass, and no more.
func TestRefusedHandshakeNamesCauses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, keys.MustGenerate().Encode())
	writeFile(t, filepath.Join(dir, "scan.7"), "scan", 0o644)
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "scan.7")
	if r.code != 1 {
		t.Errorf("submit with a wrong key: exit %d, want 1", r.code)
	}
	last := strings.TrimSpace(r.stderr)
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	for _, want := range []string{"authentication failed", "closed the connection without answering", "key is wrong", "role (port)", "address is not allowed", "server is busy"} {
		if !strings.Contains(last, want) {
			t.Errorf("submit with a wrong key: last line %q does not say %q", last, want)
		}
	}
	if n := strings.Count(r.stderr, "trying again"); n != 2 {
		t.Errorf("submit with a wrong key tried again %d times, want 2 (client.AuthRetries):\n%s", n, r.stderr)
	}
}

// relayOneBackend is one real backend, held jobs and all (see
// heldBackends), behind a real relay, with client.opts in its directory.
type relayOneBackend struct {
	dir, gate, backendDir, backend string
	server                         *serverProc
}

func startRelayOneBackend(t *testing.T) *relayOneBackend {
	t.Helper()
	base := t.TempDir()
	key, gate, servers, dirs, addrs := heldBackends(t, base, 1)
	rdir := filepath.Join(base, "relay")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		t.Fatal(err)
	}
	clientKey, _ := relayOpts(t, rdir, addrs, key)
	rp := startRelayProc(t, rdir, "relay.opts")
	clientOpts(t, filepath.Join(rdir, "client.opts"), rp.clientAddr, clientKey)
	return &relayOneBackend{dir: rdir, gate: gate, backendDir: dirs[0], backend: addrs[0], server: servers[0]}
}

// restart starts the killed backend again on its data and address.
func (r *relayOneBackend) restart(t *testing.T) {
	t.Helper()
	r.server = startServer(t, r.backendDir, "recon.opts")
	if r.server.clientAddr != r.backend {
		t.Fatalf("restarted backend listens on %s, want %s", r.server.clientAddr, r.backend)
	}
}

// TestRelayWaitRecoversBackend kills (SIGKILL) the only backend behind a
// real relay while `recon submit` waits for its job: the relay answers
// that it lost the backend, then that it is down, and submit tries again
// until the backend is restarted, as it does with a direct connection, and
// ends with the verified results.
func TestRelayWaitRecoversBackend(t *testing.T) {
	t.Parallel()
	ro := startRelayOneBackend(t)
	rdir, gate := ro.dir, ro.gate
	// A held job, the backend killed while it runs.
	in := filepath.Join(rdir, "hold.7")
	writeFile(t, in, strings.Repeat("held scan ", 3000), 0o644)
	// Without --json, the job's states are on stderr.
	p := startRecon(t, rdir, 200*time.Second, "submit", "--opts", "client.opts", "--output", "out-wait", "hold.7")
	var id string
	servertest.Eventually(t, 60*time.Second, "the submitted job runs", func() bool {
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if j, ok := strings.CutPrefix(l, "job "); ok && strings.HasSuffix(l, ": running") {
				id = strings.TrimSuffix(j, ": running")
				return true
			}
		}
		return false
	})
	ro.server.kill9(t)
	// The relay tells it the backend is lost or down (code unavailable);
	// it tries again until the backend is back.
	p.retriesPastBackend(t, ro.backend)
	ro.restart(t)
	writeFile(t, filepath.Join(gate, "release-"+id), "", 0o644)
	if code := p.wait(t); code != 0 {
		t.Fatalf("submit waiting through a backend killed and restarted: exit %d\nstderr:\n%s", code, p.stderr.String())
	}
	if out := p.stdout.String(); !strings.Contains(out, "succeeded") || sha(t, filepath.Join(rdir, "out-wait", "hold.7.out")) != sha(t, in) {
		t.Errorf("submit waiting through a backend restart:\n%s\nwant succeeded with the result", out)
	}
}

// TestRelayFetchRecoversBackend kills (SIGKILL) the only backend behind a
// real relay while `recon fetch` downloads 64 MiB of results (the fetch
// stopped with SIGSTOP once the first bytes are on disk, so that the
// backend dies mid-download): fetch tries again past the relay's word that
// the backend is down until it is restarted, as it does with a direct
// connection, and ends with the verified results.
func TestRelayFetchRecoversBackend(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 240*time.Second)
	defer cancel()
	ro := startRelayOneBackend(t)
	rdir := ro.dir
	big := filepath.Join(rdir, "big.7")
	writeRandomFile(t, big, 64<<20, 7)
	r := runRecon(t, rdir, "submit", "--opts", "client.opts", "--no-wait", "big.7")
	if r.code != 0 {
		t.Fatalf("submit big.7: exit %d\n%s", r.code, r.stderr)
	}
	bigID := strings.TrimSpace(r.stdout)
	servertest.Eventually(t, 60*time.Second, "the big job succeeds", func() bool {
		r := runRecon(t, rdir, "status", "--opts", "client.opts", bigID)
		return r.code == 0 && strings.Contains(r.stdout, "succeeded")
	})
	f := startRecon(t, rdir, 200*time.Second, "fetch", "--opts", "client.opts", "--json", "--output", "out-fetch", bigID)
	partial := func() bool {
		ms, _ := filepath.Glob(filepath.Join(rdir, ".out-fetch.fetch-*", "*"))
		for _, m := range ms {
			if st, err := os.Stat(m); err == nil && st.Size() > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(60 * time.Second)
	for !partial() {
		select {
		case <-f.done:
			t.Fatalf("the fetch ended (exit %d) before its download was seen on disk\n%s", f.code, f.stderr.String())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatal("no part of the download on disk in time")
		}
		time.Sleep(time.Millisecond)
	}
	if err := f.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ro.server.kill9(t)
	if err := f.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	f.retriesPastBackend(t, ro.backend)
	ro.restart(t)
	if code := f.wait(t); code != 0 {
		t.Fatalf("fetch through a backend killed mid-download and restarted: exit %d\nstderr:\n%s", code, f.stderr.String())
	}
	if got := filepath.Join(rdir, "out-fetch", "big.7.out"); sha(t, got) != sha(t, big) {
		t.Errorf("fetch through a backend restart: %s differs from the input", got)
	}
	t.Logf("fetch stderr:\n%s", f.stderr.String())
}

// retriesPastBackend waits until the command says it reconnects after an
// error of the relay that names the backend at addr (lost, down or
// unreachable), and fails the test if the command ends instead.
func (p *reconProc) retriesPastBackend(t *testing.T, addr string) {
	t.Helper()
	servertest.Eventually(t, 60*time.Second, "a retry past the relay's word that backend "+addr+" is down", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the command ended (exit %d) instead of retrying until the backend is back; stderr:\n%s", p.code, p.stderr.String())
		default:
		}
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(l, "reconnecting") && strings.Contains(l, "backend "+addr) {
				return true
			}
		}
		return false
	})
}
