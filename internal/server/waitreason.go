package server

import (
	"fmt"

	"github.com/recon-mri/recon/internal/protocol"
)

// pause marks w as waiting for the resource gate. The first worker to
// pause wakes every waiting client, so that a queued job's wait reason
// (see waitReason) reaches them at once.
func (p *pool) pause(w *worker) {
	p.mu.Lock()
	was := false
	for _, o := range p.workers {
		was = was || o.state == workerPaused
	}
	p.mu.Unlock()
	p.set(w, workerPaused, "")
	if !was && p.changed != nil {
		p.changed.Broadcast()
	}
}

// waitReason says why queued jobs are not starting, as a client reads it
// after "queued (position N): ": the pool is paused by the resource gate,
// every worker is busy, or there are no workers. "" when a worker is free
// to take the next job.
func (p *pool) waitReason() string {
	snap := p.snapshot()
	if snap.Paused {
		if r := p.gate.shortReason(); r != "" {
			return "workers paused, " + r
		}
		return "workers paused: " + snap.PauseReason
	}
	if snap.MaxJobs == 0 {
		return "no workers: the maximum of concurrent jobs is 0"
	}
	busy := 0
	for _, w := range snap.Workers {
		if w.State == protocol.WorkerBusy || w.State == protocol.WorkerStopping {
			busy++
		}
	}
	if busy >= snap.MaxJobs {
		if snap.MaxJobs == 1 {
			return "the only worker is busy"
		}
		return fmt.Sprintf("all %d workers busy", snap.MaxJobs)
	}
	return ""
}
