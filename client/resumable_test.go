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
