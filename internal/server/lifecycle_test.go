package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/daemon"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// stubbornScript appends a line to DIR/runs-<job id> and ignores SIGTERM
// until DIR/release-all exists: a stopping server waits for it (up to its
// kill grace).
func stubbornScript(dir string) string {
	return fmt.Sprintf(`#!/bin/sh
set -eu
trap '' TERM
d=%q
echo run >> "$d/runs-$RECON_JOB_ID"
while [ ! -e "$d/release-all" ]; do sleep 0.02; done
`, dir)
}

// TestShutdownTimeoutStillReleasesState: a Shutdown whose ctx ends while a
// script still runs returns the timeout, yet the job store and the state
// directory's lock are released as soon as the script has ended, without
// another call: a second server on the same data can start. A second
// Shutdown then returns at once, with nil.
func TestShutdownTimeoutStillReleasesState(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: stubbornScript(sig),
		Server: server.Options{KillGrace: time.Minute}, // longer than the test: only release-all ends the script
	})
	t.Cleanup(func() { release(t, sig, "all") }) // before the harness's Shutdown, should the test fail early
	c := s.Dial(t)
	id := submitOne(t, ctx, c, "P1.7", []byte("k-space")).JobID
	servertest.Eventually(t, pollTimeout, "the script runs", func() bool {
		return exists(filepath.Join(sig, "runs-"+id))
	})
	c.Close()

	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := s.Shutdown(sctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "job pool") {
		t.Fatalf("Shutdown with a script ignoring SIGTERM = %v, want a timeout naming the job pool", err)
	}
	// The script still runs: the state is still the first server's.
	cfg, _, err := config.LoadServer(s.OptsPath)
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := server.New(cfg, nil, server.Options{}); err == nil {
		s2.Shutdown(ctx)
		t.Fatal("a second server opened the state while the first one's script still ran")
	} else if !strings.Contains(err.Error(), "in use by another recon server") {
		t.Fatalf("second server.New = %v, want the state dir in use", err)
	}

	release(t, sig, "all")
	var s2 *server.Server
	servertest.Eventually(t, pollTimeout, "a second server starts on the released state", func() bool {
		s2, err = server.New(cfg, slog.New(slog.DiscardHandler), server.Options{})
		return err == nil
	})
	if err := s2.Shutdown(ctx); err != nil {
		t.Errorf("second server's Shutdown: %v", err)
	}
	// The first server's release is done: Shutdown now returns at once.
	sctx2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if err := s.Shutdown(sctx2); err != nil {
		t.Errorf("second Shutdown after the release = %v, want nil", err)
	}
}

// TestStartAfterShutdown: a server shut down before it started does not
// start afterwards (its store is closed): Start refuses and listens on
// nothing.
func TestStartAfterShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, _, err := config.LoadServer(servertest.WriteConfig(t, dir, servertest.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(cfg, nil, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, daemon.ErrStopped) {
		t.Fatalf("Start after Shutdown = %v, want daemon.ErrStopped", err)
	}
	if a := s.Addr(); a != nil {
		t.Errorf("a server shut down listens on %s", a)
	}
}
