//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestResumable checks which failures of Submit a later Submit with the
// same submission id may resume.
func TestResumable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection closed", io.ErrUnexpectedEOF, true},
		{"connection reset", &net.OpError{Op: "write", Err: errors.New("connection reset by peer")}, true},
		{"client closed", fmt.Errorf("%w: broken", client.ErrClosed), true},
		{"stalled (server timeout)", protocol.Errorf(protocol.CodeTimeout, "stalled"), true},
		{"hash mismatch", protocol.Errorf(protocol.CodeHashMismatch, "differs"), false},
		{"refused name", protocol.Errorf(protocol.CodeInvalidName, "bad"), false},
		{"relay without backend", protocol.Errorf(protocol.CodeUnavailable, "down"), false},
		{"wrong key", fmt.Errorf("connect: %w", client.ErrAuth), false},
		{"cancelled", context.Canceled, false},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), false},
	}
	for _, tt := range tests {
		if got := client.Resumable(tt.err); got != tt.want {
			t.Errorf("Resumable(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}

	// Problems with local files are not resumable.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dial(ctx)
	defer c.Close()
	for _, paths := range [][]string{nil, {filepath.Join(t.TempDir(), "missing.7")}, {t.TempDir()}} {
		if _, err := c.Submit(ctx, paths, nil); err == nil || client.Resumable(err) {
			t.Errorf("Submit(%q) = %v: want an error that is not resumable", paths, err)
		}
	}
}

// TestSubmitOnClosedClient fails at once: a Client ended by Close does not
// reconnect.
func TestSubmitOnClosedClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dial(ctx)
	c.Close()
	start := time.Now()
	in := filepath.Join(t.TempDir(), "P1.7")
	if err := os.WriteFile(in, []byte("raw"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{ReconnectDelay: 5 * time.Second})
	if !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Submit on a closed client: %v, want ErrClosed", err)
	}
	if d := time.Since(start); d >= 5*time.Second {
		t.Errorf("Submit on a closed client waited %v to reconnect", d)
	}
}

// TestRetryable checks which failures of Wait and Fetch are tried again on
// a new session: those Resumable, and a relay's word that the backend
// holding the job is lost or down, which may come back.
func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection closed", io.ErrUnexpectedEOF, true},
		{"relay lost the backend", protocol.Errorf(protocol.CodeUnavailable, "lost the connection to backend"), true},
		{"unknown job", protocol.Errorf(protocol.CodeNotFound, "no job"), false},
		{"wrong key", fmt.Errorf("connect: %w", client.ErrAuth), false},
		{"cancelled", context.Canceled, false},
	}
	for _, tt := range tests {
		if got := client.Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestDialRetryingWaitsForServer dials a port where nothing listens yet
// and starts listening once the first attempt has failed: DialRetrying
// connects. With no retries it fails at once.
func TestDialRetryingWaitsForServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := servertest.Start(t, servertest.Options{})
	cfg := s.ClientConfig()
	// A proxy port, closed until the first attempt failed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.Address = addr
	if _, err := client.DialRetrying(ctx, cfg, client.Backoff{Retries: -1}); err == nil || !client.Resumable(err) {
		t.Fatalf("DialRetrying with no retries and nothing listening: %v, want a resumable error", err)
	}
	failed := make(chan error, 1)
	var c *client.Client
	done := make(chan error, 1)
	go func() {
		var err error
		c, err = client.DialRetrying(ctx, cfg, client.Backoff{Retries: 3, Delay: 100 * time.Millisecond,
			OnRetry: func(retry int, err error, wait time.Duration) {
				if retry == 1 {
					failed <- err
				}
			}})
		done <- err
	}()
	if err := <-failed; err == nil {
		t.Fatal("OnRetry without an error")
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer ln.Close()
	go forward(ln, s.Addr().String())
	if err := <-done; err != nil {
		t.Fatalf("DialRetrying once the port listens: %v", err)
	}
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
}

// forward copies each connection accepted on ln to and from target, until
// ln is closed.
func forward(ln net.Listener, target string) {
	for {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", target)
		if err != nil {
			a.Close()
			continue
		}
		go func() { io.Copy(b, a); b.Close() }()
		go func() { io.Copy(a, b); a.Close() }()
	}
}
