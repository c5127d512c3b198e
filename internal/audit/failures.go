package audit

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Limits of the failure summaries.
const (
	// FailureInterval is how often failed handshakes are summarised: at
	// most one record per peer address per interval.
	FailureInterval = time.Minute
	// MaxFailurePeers bounds the addresses counted in one interval; the
	// failures of further addresses are counted together, under the peer
	// OtherPeers.
	MaxFailurePeers = 1024
)

// OtherPeers is the peer of the summary that counts the addresses beyond
// MaxFailurePeers.
const OtherPeers = "other"

// Failures counts failed handshakes per peer address in memory, so that a
// flood of them costs no disk write each: Run writes one summary record
// per address per interval. Add is safe for concurrent use and never
// blocks on the disk.
type Failures struct {
	mu    sync.Mutex
	peers map[netip.Addr]*failCount
	other failCount
	now   func() time.Time
}

type failCount struct {
	n           int
	first, last time.Time
}

func (c *failCount) add(t time.Time) {
	if c.n == 0 {
		c.first = t
	}
	c.n++
	c.last = t
}

// NewFailures returns an empty counter; now is its clock (nil: time.Now).
func NewFailures(now func() time.Time) *Failures {
	if now == nil {
		now = time.Now
	}
	return &Failures{peers: map[netip.Addr]*failCount{}, now: now}
}

// Add counts one failed handshake from ip.
func (f *Failures) Add(ip netip.Addr) {
	t := f.now().UTC()
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.peers[ip]
	if c == nil {
		if len(f.peers) >= MaxFailurePeers {
			f.other.add(t)
			return
		}
		c = &failCount{}
		f.peers[ip] = c
	}
	c.add(t)
}

// take returns the summaries of the interval that ends now, sorted by
// peer, and starts a new one.
func (f *Failures) take() []Record {
	f.mu.Lock()
	peers, other := f.peers, f.other
	f.peers, f.other = map[netip.Addr]*failCount{}, failCount{}
	f.mu.Unlock()
	out := make([]Record, 0, len(peers)+1)
	for ip, c := range peers {
		out = append(out, summary(ip.String(), c))
	}
	slices.SortFunc(out, func(a, b Record) int {
		if a.Peer < b.Peer {
			return -1
		}
		if a.Peer > b.Peer {
			return 1
		}
		return 0
	})
	if other.n > 0 {
		out = append(out, summary(OtherPeers, &other))
	}
	return out
}

func summary(peer string, c *failCount) Record {
	first, last := c.first, c.last
	return Record{Kind: KindAuthFailures, Peer: peer, Failures: c.n, First: &first, Last: &last}
}

// Flush writes the summaries of the failures counted so far to l. A
// summary that cannot be written is lost (and reported in the error).
func (f *Failures) Flush(ctx context.Context, l *Log) error {
	var first error
	for _, r := range f.take() {
		if err := l.Append(ctx, r); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Run flushes the summaries to l every interval until ctx ends, then
// once more. Errors go to onErr.
func (f *Failures) Run(ctx context.Context, l *Log, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			if err := f.Flush(context.WithoutCancel(ctx), l); err != nil {
				onErr(err)
			}
			return
		}
		if err := f.Flush(ctx, l); err != nil {
			onErr(err)
		}
	}
}
