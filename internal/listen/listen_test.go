package listen

import (
	"net/netip"
	"testing"
)

func TestLimiter(t *testing.T) {
	l := newLimiter()
	a := netip.MustParseAddr("127.0.0.1")
	b := netip.MustParseAddr("127.0.0.2")
	for i := range MaxUnauthConnsPerIP {
		if !l.admit(a) {
			t.Fatalf("connection %d from one address refused below the cap", i+1)
		}
	}
	if l.admit(a) {
		t.Fatal("one connection more than MaxUnauthConnsPerIP in the handshake was admitted")
	}
	if !l.admit(b) {
		t.Fatal("another address was refused while the first was at its cap")
	}
	// Once authenticated, the handshake slots free up for more.
	for range MaxUnauthConnsPerIP {
		l.authenticated(a)
	}
	if !l.admit(a) {
		t.Fatal("address refused after its handshakes completed")
	}
	// Releasing everything leaves nothing behind.
	l.authenticated(a)
	l.authenticated(b)
	for range MaxUnauthConnsPerIP + 1 {
		l.release(a)
	}
	l.release(b)
	if l.total != 0 || l.unauth != 0 || len(l.perIP) != 0 || len(l.unauthPerIP) != 0 {
		t.Fatalf("limiter not empty after releases: %+v", l)
	}
	// The per-address cap on all connections.
	for i := range MaxConnsPerIP {
		if !l.admit(a) {
			t.Fatalf("connection %d refused below MaxConnsPerIP", i+1)
		}
		l.authenticated(a)
	}
	if l.admit(a) {
		t.Fatal("one connection more than MaxConnsPerIP was admitted")
	}
}
