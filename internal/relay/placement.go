package relay

import "sort"

// free is how many more jobs b would start at once: its workers less the
// jobs running, queued (placed since the last check included) and being
// uploaded toward it, as of its last health check.
func (b *backend) free() int { return max(b.workers-b.running-b.queued-b.uploading, 0) }

// pending is the length of b's queue once the uploads toward it arrive.
func (b *backend) pending() int { return b.queued + b.uploading }

// candidates returns the healthy backends in the order a submission should
// try them: the most free workers first (a job there starts at once), then
// the shortest queue, then the fewest running jobs; ties broken in turn,
// so an idle relay spreads submissions.
func (p *pool) candidates() []*backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.backends)
	type cand struct {
		b                      *backend
		free, pending, running int
		turn                   int
	}
	var cs []cand
	for i, b := range p.backends {
		if b.healthy {
			cs = append(cs, cand{b, b.free(), b.pending(), b.running, (i - p.next + n) % n})
		}
	}
	p.next = (p.next + 1) % max(n, 1)
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		switch {
		case a.free != b.free:
			return a.free > b.free
		case a.pending != b.pending:
			return a.pending < b.pending
		case a.running != b.running:
			return a.running < b.running
		}
		return a.turn < b.turn
	})
	out := make([]*backend, len(cs))
	for i, c := range cs {
		out[i] = c.b
	}
	return out
}
