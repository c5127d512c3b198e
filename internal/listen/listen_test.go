package listen

import (
	"net/netip"
	"testing"
)

func TestLimiter(t *testing.T) {
	l := newLimiter()
	a := netip.MustParseAddr("127.0.0.1")
	b := netip.MustParseAddr("127.0.0.2")
	admit := func(ip netip.Addr) (p, evicted *pending) { return l.admit(ip, nil, nil) }
	var fromA []*pending
	for i := range MaxUnauthConnsPerIP {
		p, ev := admit(a)
		if p == nil || ev != nil {
			t.Fatalf("connection %d from one address: admitted %v, evicted %v; want admitted, none evicted", i+1, p != nil, ev != nil)
		}
		fromA = append(fromA, p)
	}
	// One more in the handshake evicts the oldest, and takes its slot.
	p, ev := admit(a)
	if p == nil || ev != fromA[0] {
		t.Fatal("a connection beyond MaxUnauthConnsPerIP in the handshake did not evict the oldest")
	}
	if l.unauth != MaxUnauthConnsPerIP || len(l.pending[a]) != MaxUnauthConnsPerIP {
		t.Fatalf("after an eviction: %d in the handshake (%d from a), want %d", l.unauth, len(l.pending[a]), MaxUnauthConnsPerIP)
	}
	// The evicted connection's goroutine ends: nothing is counted twice.
	l.authenticated(ev)
	l.release(a)
	fromA = append(fromA[1:], p)
	if p2, ev2 := admit(b); p2 == nil || ev2 != nil {
		t.Fatal("another address was refused, or evicted, while the first was at its cap")
	}
	// The next one evicts the oldest still waiting, not one that finished.
	l.authenticated(fromA[0])
	if _, ev := admit(a); ev != nil {
		t.Fatal("an eviction although a handshake slot was free")
	}
	if _, ev := admit(a); ev != fromA[1] {
		t.Fatal("the eviction did not take the oldest connection still in the handshake")
	}
	// Releasing everything leaves nothing behind.
	for _, ps := range l.pending {
		for _, p := range ps {
			l.authenticated(p)
		}
	}
	for range l.perIP[a] {
		l.release(a)
	}
	l.release(b)
	if l.total != 0 || l.unauth != 0 || len(l.perIP) != 0 || len(l.pending) != 0 {
		t.Fatalf("limiter not empty after releases: %+v", l)
	}
	// The per-address cap on all connections.
	for i := range MaxConnsPerIP {
		p, _ := admit(a)
		if p == nil {
			t.Fatalf("connection %d refused below MaxConnsPerIP", i+1)
		}
		l.authenticated(p)
	}
	if p, _ := admit(a); p != nil {
		t.Fatal("one connection more than MaxConnsPerIP was admitted")
	}
	// At the global cap on connections in the handshake, a connection from
	// an address below its own cap evicts the oldest connection of the
	// address holding the most.
	l = newLimiter()
	var first []*pending // the first connection of each address
	for i := range MaxUnauthConns {
		n := i / MaxUnauthConnsPerIP
		if i >= MaxUnauthConns-MaxUnauthConnsPerIP/2 {
			n = 100 // a last address holding only a few
		}
		p, ev := admit(netip.AddrFrom4([4]byte{127, 1, byte(n), 1}))
		if p == nil || ev != nil {
			t.Fatalf("connection %d below MaxUnauthConns: admitted %v, evicted %v", i+1, p != nil, ev != nil)
		}
		if i%MaxUnauthConnsPerIP == 0 {
			first = append(first, p)
		}
	}
	for i, want := range first[:3] {
		p, ev := admit(b)
		if p == nil || ev != want {
			t.Fatalf("connection %d over MaxUnauthConns: admitted %v; want it admitted, evicting the oldest of the busiest address", i+1, p != nil)
		}
	}
	if l.unauth != MaxUnauthConns {
		t.Fatalf("%d in the handshake after evictions, want %d", l.unauth, MaxUnauthConns)
	}
}
