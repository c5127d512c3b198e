package main

// How a daemon started by recon stops.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
	"github.com/recon-mri/recon/internal/statelock"
)

// TestSIGINTStopsCleanly stops a real server with SIGINT, as Ctrl-C does:
// exit status 0, a "stopped" message, and the state directory's lock free.
func TestSIGINTStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Fatalf("recon status: exit %d\n%s", r.code, r.stderr)
	}
	if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.done:
		srv.done <- err
		if err != nil {
			t.Errorf("recon server after SIGINT: %v, want exit status 0\n%s", err, srv.stderr)
		}
	case <-time.After(shutdownTimeout + 10*time.Second):
		srv.cmd.Process.Kill()
		t.Fatalf("recon server did not stop after SIGINT\n%s", srv.stderr)
	}
	// The stderr pipe is read by another goroutine: wait for the last line.
	servertest.Eventually(t, 10*time.Second, "'stopped' message", func() bool {
		return strings.Contains(srv.stderr.String(), "recon server: stopped")
	})
	f, err := statelock.Acquire(filepath.Join(dir, "data", "state", "lock"))
	if err != nil {
		t.Fatalf("state lock after SIGINT: %v", err)
	}
	f.Close()
	// A new server starts on the same state.
	srv2 := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv2.clientAddr, key)
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Errorf("recon status after a restart: exit %d\n%s", r.code, r.stderr)
	}
}
