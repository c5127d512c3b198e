package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestWatchMissingDirectory: a CLIENT_WATCH_DIRECTORY that does not exist
// (a typo) ends recon watch at once with the reason, instead of being
// retried for ever.
func TestWatchMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	watchOpts(t, dir, "127.0.0.1:1", keys.MustGenerate().Encode()) // "scanner" is not created
	r := runRecon(t, dir, "watch", "--opts", "client.opts")
	if r.code != exitFailure || !strings.Contains(r.stderr, "CLIENT_WATCH_DIRECTORY "+filepath.Join(dir, "scanner")+" does not exist") {
		t.Errorf("recon watch without its directory: exit %d\n%s", r.code, r.stderr)
	}
}

// TestWatchWrongKey: with a key the server does not accept, recon watch
// tries the handshake a few times at start (a busy server refuses the same
// way) and then exits 1 saying what to check.
func TestWatchWrongKey(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	watchOpts(t, dir, srv.clientAddr, keys.MustGenerate().Encode())
	if err := os.Mkdir(filepath.Join(dir, "scanner"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runRecon(t, dir, "watch", "--opts", "client.opts")
	if r.code != exitFailure || !strings.Contains(r.stderr, "the server refused the handshake: check SHARED_KEY") ||
		!strings.Contains(r.stderr, "4 times in a row") {
		t.Errorf("recon watch with a wrong key: exit %d\n%s", r.code, r.stderr)
	}
}

// freeLoopbackPort returns a port on 127.0.0.1 that nothing listens on
// (it did a moment ago).
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TestWatchServerDownAtStartPairsAndLaterAuthError: a server that is down
// when recon watch starts is not fatal: it carries on and submits once
// the server is up. Two patterns (*.cfl,*.hdr) gather a BART pair into
// one job. When the server later refuses the handshake (restarted with
// another key), the log has an ERROR record that says what to check.
func TestWatchServerDownAtStartPairsAndLaterAuthError(t *testing.T) {
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	key := keys.MustGenerate().Encode()
	watchOpts(t, dir, "127.0.0.1:"+port, key, "CLIENT_WATCH_PATTERN = *.cfl, *.hdr")
	scanner := filepath.Join(dir, "scanner")
	if err := os.Mkdir(scanner, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startRecon(t, dir, 90*time.Second, "watch", "--opts", "client.opts")
	logHas := func(s string) bool {
		b, _ := os.ReadFile(filepath.Join(dir, "watch.log"))
		return strings.Contains(string(b), s)
	}
	servertest.Eventually(t, 30*time.Second, "the watch says the server is not reachable", func() bool {
		return logHas(`"msg":"server not reachable at start; carrying on, submissions will retry"`)
	})
	select {
	case <-w.done:
		t.Fatalf("recon watch exited (%d) with the server down at start:\n%s", w.code, w.stderr.String())
	default:
	}

	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "SERVER_PORT = "+port, "SHARED_KEY = "+key)
	srv := startServer(t, dir, "recon.opts")
	writeFile(t, filepath.Join(scanner, "ph.cfl"), strings.Repeat("c", 4096), 0o644)
	writeFile(t, filepath.Join(scanner, "ph.hdr"), "# Dimensions\n4 4 1 1\n", 0o644)
	writeFile(t, filepath.Join(scanner, "notes.txt"), "not raw data", 0o644)
	summary, groupDir := waitWatchSummary(t, dir)
	if summary.Status != "done" || summary.State != "succeeded" {
		t.Fatalf("summary %+v", summary)
	}
	for _, name := range []string{"ph.cfl.out", "ph.hdr.out"} {
		if _, err := os.Stat(filepath.Join(groupDir, name)); err != nil {
			t.Errorf("result of the pair: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(groupDir, "notes.txt.out")); err == nil {
		t.Errorf("a file matching no pattern was submitted")
	}

	// The server comes back with another key: a refused handshake is an
	// ERROR, with what to check.
	srv.stop(t)
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "SERVER_PORT = "+port)
	startServer(t, dir, "recon.opts")
	writeFile(t, filepath.Join(scanner, "next.cfl"), "more", 0o644)
	servertest.Eventually(t, 30*time.Second, "an ERROR record for the refused handshake", func() bool {
		return logHas(`"level":"ERROR","msg":"submission failed: the server refused the handshake: check SHARED_KEY`)
	})
	w.cmd.Process.Signal(syscall.SIGTERM)
	<-w.done
}
