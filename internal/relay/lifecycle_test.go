package relay_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/daemon"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/relay"
)

// TestRelayStartAfterShutdown: a relay shut down before it started does
// not start afterwards (its route store is closed): Start refuses and
// listens on nothing, a second Shutdown returns the same nil, and the
// state directory is free for the next relay.
func TestRelayStartAfterShutdown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	opts := writeRelayConfig(t, dir, []string{"127.0.0.1:1"}, keys.MustGenerate().Encode(), nil)
	cfg, _, err := config.LoadRelay(opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, nil, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	if err := r.Start(); !errors.Is(err, daemon.ErrStopped) {
		t.Fatalf("Start after Shutdown = %v, want daemon.ErrStopped", err)
	}
	if a := r.Addr(); a != nil {
		t.Errorf("a relay shut down listens on %s", a)
	}
	r2, err := relay.New(cfg, nil, relay.Options{})
	if err != nil {
		t.Fatalf("a second relay on %s: %v", filepath.Join(dir, "state"), err)
	}
	if err := r2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
