package server_test

// Connections a peer holds, floods or never finishes (docs/SECURITY.md,
// section 2), each against a real server on loopback.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// dialFrom opens a plain TCP connection to addr from the loopback address ip.
func dialFrom(ctx context.Context, addr, ip string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// refusedQuickly reports whether the server closes conn within d, without
// a byte: what it does to a connection over a cap.
func refusedQuickly(conn net.Conn, d time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := conn.Read(make([]byte, 1))
	switch {
	case n > 0:
		return errors.New("the server sent data")
	case errors.Is(err, io.EOF) || isReset(err):
		return nil
	}
	return fmt.Errorf("not closed within %v: %v", d, err)
}

// TestConnectionFlood fills the caps on connections from 127.0.0.1 (in the
// handshake, per address; then in all, globally; then authenticated, per
// address): over the per-address cap in the handshake a new connection
// evicts the oldest (closed at once, without a word), so a client with the
// key from the flooding address still gets in; over the global cap in the
// handshake it evicts the oldest of the busiest address, so a client from a
// fresh address gets in; over the cap on sessions the new connection is
// closed at once. A session from 127.0.0.2 is served
// throughout, a new client from 127.0.0.2 gets in while only one address is
// over its cap, and once the flood ends 127.0.0.1 is served again.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// A long handshake timeout: a connection closed quickly was refused,
	// not timed out.
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: 30 * time.Second}})
	addr := s.Addr().String()
	key := mustKey(t, s.Key)
	good, err := rawDial(ctx, addr, "127.0.0.2", key, secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	served := func(t *testing.T, what string) {
		t.Helper()
		if _, err := rawStatus(good); err != nil {
			t.Fatalf("%s: the session from 127.0.0.2 is not served: %v", what, err)
		}
	}
	newClientFrom := func(ip string) error {
		c, err := rawDial(ctx, addr, ip, key, secure.RoleClient)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = rawStatus(c)
		return err
	}
	var flood []net.Conn
	closeFlood := func() {
		for _, c := range flood {
			c.Close()
		}
		flood = nil
	}
	defer closeFlood()
	open := func(t *testing.T, ip string, n int) {
		t.Helper()
		for range n {
			c, err := dialFrom(ctx, addr, ip)
			if err != nil {
				t.Fatalf("flood from %s: %v", ip, err)
			}
			flood = append(flood, c)
		}
	}

	t.Run("1 handshake per address", func(t *testing.T) {
		// 1. Connections that never start the handshake, from one address:
		// the next one evicts the oldest, and a client with the key gets in.
		open(t, "127.0.0.1", listen.MaxUnauthConnsPerIP)
		over, err := dialFrom(ctx, addr, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if err := refusedQuickly(flood[0], 10*time.Second); err != nil {
			t.Errorf("the oldest connection in the handshake from 127.0.0.1, after connection %d: %v", listen.MaxUnauthConnsPerIP+1, err)
		}
		flood = append(flood, over)
		if err := newClientFrom("127.0.0.1"); err != nil {
			t.Errorf("a client with the key from 127.0.0.1 during its flood: %v", err)
		}
		served(t, "per-address flood")
		if err := newClientFrom("127.0.0.2"); err != nil {
			t.Errorf("a new client from 127.0.0.2 during the per-address flood: %v", err)
		}
		closeFlood()
		servertest.Eventually(t, pollTimeout, "127.0.0.1 served again", func() bool { return newClientFrom("127.0.0.1") == nil })
	})

	t.Run("2 handshake global", func(t *testing.T) {
		// 2. Connections in the handshake from many addresses, up to the
		// global cap: a new one evicts the oldest of the address holding the
		// most, so a client with the key from a fresh address gets in.
		for i := range listen.MaxUnauthConns / listen.MaxUnauthConnsPerIP {
			open(t, fmt.Sprintf("127.0.1.%d", i+1), listen.MaxUnauthConnsPerIP)
		}
		if err := newClientFrom("127.0.2.1"); err != nil {
			t.Errorf("a client with the key from 127.0.2.1 during the global flood: %v", err)
		}
		served(t, "global flood") // authenticated before the flood
		closeFlood()
		servertest.Eventually(t, pollTimeout, "new clients served again", func() bool {
			return newClientFrom("127.0.0.2") == nil && newClientFrom("127.0.0.1") == nil
		})
	})

	t.Run("3 sessions per address", func(t *testing.T) {
		// 3. Authenticated sessions from one address, up to its cap.
		var sessions []*secure.Conn
		defer func() {
			for _, c := range sessions {
				c.Close()
			}
		}()
		for range listen.MaxConnsPerIP {
			c, err := rawDial(ctx, addr, "127.0.0.3", key, secure.RoleClient)
			if err != nil {
				t.Fatalf("session %d from 127.0.0.3: %v", len(sessions)+1, err)
			}
			sessions = append(sessions, c)
		}
		if err := newClientFrom("127.0.0.3"); !errors.Is(err, secure.ErrAuth) {
			t.Errorf("session %d from 127.0.0.3: %v, want refused (ErrAuth)", listen.MaxConnsPerIP+1, err)
		}
		served(t, "authenticated flood")
		if err := newClientFrom("127.0.0.2"); err != nil {
			t.Errorf("a new client from 127.0.0.2 during the authenticated flood: %v", err)
		}
		if _, err := rawStatus(sessions[0]); err != nil {
			t.Errorf("a flooding session is not served: %v", err)
		}
		for _, c := range sessions {
			c.Close()
		}
		sessions = nil
		servertest.Eventually(t, pollTimeout, "127.0.0.3 served again", func() bool { return newClientFrom("127.0.0.3") == nil })
	})

	served(t, "after the floods")
}

// TestSlowHandshake sends the handshake a byte at a time: the handshake
// timeout ends it, and a client from another address is served meanwhile.
func TestSlowHandshake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const timeout = time.Second
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: timeout}})
	conn, err := dialFrom(ctx, s.Addr().String(), "127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		preamble := []byte("RCN\x00\x01\x01\x00\x30")
		for i := 0; ; i++ {
			if _, err := conn.Write([]byte{preamble[i%len(preamble)]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	c, err := rawDial(ctx, s.Addr().String(), "127.0.0.2", mustKey(t, s.Key), secure.RoleClient)
	if err != nil {
		t.Fatalf("a client during the slow handshake: %v", err)
	}
	if _, err := rawStatus(c); err != nil {
		t.Errorf("a client during the slow handshake: %v", err)
	}
	c.Close()
	err = expectHangUp(conn, 10*time.Second)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("slow handshake: %v", err)
	}
	if d := time.Since(start); d < timeout/2 || d > timeout+5*time.Second {
		t.Errorf("slow handshake ended after %v, want about the handshake timeout (%v)", d, timeout)
	}
}

// TestHalfClosedHandshake sends the preamble and shuts its side: the
// server closes at once, without waiting for the handshake timeout.
func TestHalfClosedHandshake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: 30 * time.Second}})
	conn, err := dialFrom(ctx, s.Addr().String(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("RCN\x00\x01\x01"))
	conn.(*net.TCPConn).CloseWrite()
	if err := refusedQuickly(conn, 10*time.Second); err != nil {
		t.Errorf("half-closed handshake: %v", err)
	}
	checkServes(t, ctx, s)
}

// TestGlobalConnectionCap opens authenticated sessions from eight
// addresses until the server holds listen.MaxConns connections in all: the
// next one, from a fresh address, is refused; every open session is still
// served; once some close, a new client gets in.
func TestGlobalConnectionCap(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	addr := s.Addr().String()
	key := mustKey(t, s.Key)
	good, err := rawDial(ctx, addr, "127.0.0.2", key, secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	var sessions []*secure.Conn
	defer func() {
		for _, c := range sessions {
			c.Close()
		}
	}()
	// good is one connection: listen.MaxConns-1 more fill the cap, at most
	// listen.MaxConnsPerIP from each address.
	for i := 0; len(sessions) < listen.MaxConns-1; i++ {
		ip := fmt.Sprintf("127.0.5.%d", i/listen.MaxConnsPerIP+1)
		c, err := rawDial(ctx, addr, ip, key, secure.RoleClient)
		if err != nil {
			t.Fatalf("session %d (from %s) below the global cap: %v", len(sessions)+2, ip, err)
		}
		sessions = append(sessions, c)
	}
	if c, err := rawDial(ctx, addr, "127.0.6.1", key, secure.RoleClient); err == nil {
		c.Close()
		t.Fatalf("connection %d was admitted over the global cap of %d", listen.MaxConns+1, listen.MaxConns)
	}
	if _, err := rawStatus(good); err != nil {
		t.Errorf("the session from 127.0.0.2 is not served at the global cap: %v", err)
	}
	if _, err := rawStatus(sessions[len(sessions)-1]); err != nil {
		t.Errorf("the last session admitted is not served: %v", err)
	}
	for _, c := range sessions[:8] {
		c.Close()
	}
	servertest.Eventually(t, pollTimeout, "a new client is served once sessions close", func() bool {
		c, err := rawDial(ctx, addr, "127.0.6.1", key, secure.RoleClient)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = rawStatus(c)
		return err == nil
	})
}

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
