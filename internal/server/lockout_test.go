package server_test

import (
	"net"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestPartialPreambleFloodDoesNotLockOut opens more connections from
// 127.0.0.1 than listen.MaxUnauthConnsPerIP, each sending only the start of
// the preamble and then holding still, and reopens those the server closes:
// a client with the key from the same address still connects and is served,
// each time, because a new connection evicts the oldest one in the
// handshake instead of being refused. The handshake timeout is long, so
// only the eviction can let the client in. Evicted peers get no answer.
func TestPartialPreambleFloodDoesNotLockOut(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: time.Minute}})
	addr := s.Addr().String()
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	open := func(n int) {
		t.Helper()
		for range n {
			c, err := dialFrom(ctx, addr, "127.0.0.1")
			if err != nil {
				t.Fatalf("flood: %v", err)
			}
			if _, err := c.Write([]byte("RCN")); err != nil { // half the preamble
				t.Fatalf("flood: %v", err)
			}
			flood = append(flood, c)
		}
	}
	const extra = 4
	open(listen.MaxUnauthConnsPerIP + extra)
	// The oldest ones were evicted, closed without a byte.
	for i, c := range flood[:extra] {
		if err := refusedQuickly(c, 20*time.Second); err != nil {
			t.Errorf("flood connection %d, evicted by a newer one: %v", i+1, err)
		}
	}
	for round := 1; round <= 3; round++ {
		cfg := s.ClientConfig()
		cfg.DialTimeout = 20 * time.Second
		start := time.Now()
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			t.Fatalf("round %d: a client with the key from the flooding address: %v", round, err)
		}
		t.Logf("round %d: connected in %v with %d connections of the flood open", round, time.Since(start).Round(time.Microsecond), len(flood))
		if _, err := c.Status(ctx); err != nil {
			t.Errorf("round %d: the client is not served: %v", round, err)
		}
		c.Close()
		// The flood reopens what was closed, as a peer that keeps the
		// address at its cap would.
		open(extra)
	}
}
