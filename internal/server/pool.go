package server

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
)

// idlePoll bounds how long an idle worker sleeps without looking at the
// queue, as a safety net under the change notifications.
const idlePoll = 5 * time.Second

// Worker states, as reported by admin workers.
const (
	workerIdle     = protocol.WorkerIdle
	workerBusy     = protocol.WorkerBusy
	workerPaused   = protocol.WorkerPaused
	workerStopping = protocol.WorkerStopping
)

// pool runs jobs on a set of workers whose number can change at run time
// (setmaxjobs): new workers start at once, surplus ones stop after their
// current job. It owns job execution: each worker claims a job from the
// store, has the executor run it, and records its end (worker.go).
type pool struct {
	poolDeps
	gate *gate

	mu      sync.Mutex
	target  int
	nextID  int
	workers map[int]*worker
	wg      sync.WaitGroup
	ctx     context.Context // the pool's run context, set by run
	// running holds the cancel of each running job's attempt, by job id.
	running map[string]context.CancelCauseFunc
	// cancelReq holds running jobs an admin cancelled before their worker
	// had registered them in running.
	cancelReq map[string]bool
}

// poolDeps is what the pool runs jobs with.
type poolDeps struct {
	cfg       *config.Server
	log       *slog.Logger
	store     *jobs.Store
	exec      executor
	changed   *notifier                // told of every job the pool claims or ends
	durations *prometheus.HistogramVec // run time of jobs, by final state
	pacs      *deliverer               // told of every job that succeeds (pacs.go)
}

type worker struct {
	id       int
	state    protocol.WorkerState
	jobID    string
	identity string // the owner of jobID
	since    time.Time
	stop     chan struct{} // closed to ask an idle worker to leave
	quit     bool          // leave after the current job
	// claiming is set while the worker asks the store for a job: it may
	// come back with one, so it is retired like a busy worker.
	claiming bool
}

func newPool(d poolDeps, n int, g *gate) *pool {
	return &pool{poolDeps: d, gate: g, target: n, workers: map[int]*worker{},
		running: map[string]context.CancelCauseFunc{}, cancelReq: map[string]bool{}}
}

// size is the number of workers the pool aims for.
func (p *pool) size() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// run starts the workers and returns when all have stopped after ctx ends.
func (p *pool) run(ctx context.Context) {
	p.mu.Lock()
	p.ctx = ctx
	p.adjustLocked()
	p.mu.Unlock()
	p.gate.run(ctx) // until ctx ends
	p.wg.Wait()
}

// resize sets the number of workers and returns the previous one.
func (p *pool) resize(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.target
	p.target = n
	if p.ctx != nil {
		p.adjustLocked()
	}
	return prev
}

// adjustLocked starts or retires workers until the live ones (those not
// leaving) match the target. Idle workers are retired first.
func (p *pool) adjustLocked() {
	var live []*worker
	for _, w := range p.workers {
		if !w.quit {
			live = append(live, w)
		}
	}
	for n := len(live); n < p.target; n++ {
		p.nextID++
		w := &worker{id: p.nextID, state: workerIdle, since: time.Now(), stop: make(chan struct{})}
		p.workers[w.id] = w
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.work(p.ctx, w)
		}()
	}
	if surplus := len(live) - p.target; surplus > 0 {
		// Retire idle or paused workers before busy (or claiming) ones,
		// newest first.
		sort.Slice(live, func(i, j int) bool {
			bi, bj := live[i].state == workerBusy || live[i].claiming, live[j].state == workerBusy || live[j].claiming
			if bi != bj {
				return !bi
			}
			return live[i].id > live[j].id
		})
		for _, w := range live[:surplus] {
			w.quit = true
			close(w.stop)
			if w.state == workerBusy || w.claiming {
				w.state = workerStopping
			}
		}
	}
}

func (p *pool) set(w *worker, state protocol.WorkerState, jobID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.quit && state != workerBusy {
		state = workerStopping
	}
	if w.jobID != jobID {
		w.identity = ""
	}
	if w.state != state || w.jobID != jobID {
		w.state, w.jobID, w.since = state, jobID, time.Now()
	}
}

// leaving reports whether w has been retired; if so it is removed.
func (p *pool) leaving(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.quit {
		delete(p.workers, w.id)
		return true
	}
	return false
}

func (p *pool) work(ctx context.Context, w *worker) {
	for ctx.Err() == nil && !p.leaving(w) {
		wake := p.changed.Wait()
		// Nothing to do: sleep until something changes.
		n, err := p.store.QueuedCount(ctx)
		if err == nil && n == 0 {
			p.set(w, workerIdle, "")
			p.sleep(ctx, w, wake, idlePoll)
			continue
		}
		// A job waits: take it only if the executor is ready and the
		// machine has room.
		if h, ok := p.exec.(holder); ok {
			if held, _, ready := h.held(); held {
				p.set(w, workerPaused, "")
				p.sleep(ctx, w, ready, p.gate.interval)
				continue
			}
		}
		if ok, _ := p.gate.check(ctx); !ok {
			p.pause(w)
			p.sleep(ctx, w, nil, p.gate.interval)
			continue
		}
		j, leave, err := p.claim(ctx, w)
		switch {
		case leave:
			return
		case errors.Is(err, jobs.ErrNoJob):
			continue
		case err != nil:
			if ctx.Err() == nil {
				p.log.Error("claim job", "worker", w.id, "err", err)
				p.sleep(ctx, w, nil, time.Second)
			}
			continue
		}
		p.runJob(ctx, j, w.id)
		p.set(w, workerIdle, "")
	}
	p.mu.Lock()
	delete(p.workers, w.id)
	p.mu.Unlock()
}

// claim takes the oldest queued job for w, unless w has been retired
// (leave is then true and w removed). The retirement check and the start of
// the claim are one step under the pool's lock, and a claiming worker counts
// as busy for adjustLocked: a worker retired by setmaxjobs never takes
// another job, so no more jobs run than the new maximum beyond those that
// were already running.
func (p *pool) claim(ctx context.Context, w *worker) (j *jobs.Job, leave bool, err error) {
	p.mu.Lock()
	if w.quit {
		delete(p.workers, w.id)
		p.mu.Unlock()
		return nil, true, nil
	}
	w.claiming = true
	p.mu.Unlock()

	j, err = p.store.Claim(ctx)

	p.mu.Lock()
	defer p.mu.Unlock()
	w.claiming = false
	if err == nil {
		state := workerBusy
		if w.quit { // retired while claiming: it runs this job, then leaves
			state = workerStopping
		}
		w.state, w.jobID, w.identity, w.since = state, j.ID, j.Identity, time.Now()
	}
	return j, false, err
}

// sleep waits for wake, d, the worker's retirement or ctx.
func (p *pool) sleep(ctx context.Context, w *worker, wake <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	case <-w.stop:
	case <-ctx.Done():
	}
}

// snapshot describes the pool for admin workers and status. The pool is
// paused while a worker waits for the resource gate: the gate's own state
// stays "paused" after the queue has emptied (nobody asks it then), which
// would report a pause that holds nothing back beside idle workers.
func (p *pool) snapshot() protocol.WorkersReply {
	gatePaused, reason := p.gate.paused()
	p.mu.Lock()
	r := protocol.WorkersReply{MaxJobs: p.target, Workers: []protocol.WorkerInfo{}}
	waiting := false
	for _, w := range p.workers {
		r.Workers = append(r.Workers, protocol.WorkerInfo{ID: w.id, State: w.state, JobID: w.jobID, Identity: w.identity, Since: w.since.UTC()})
		waiting = waiting || w.state == workerPaused
	}
	p.mu.Unlock()
	sort.Slice(r.Workers, func(i, j int) bool { return r.Workers[i].ID < r.Workers[j].ID })
	if gatePaused && waiting {
		r.Paused, r.PauseReason = true, reason
	}
	if h, ok := p.exec.(holder); ok && waiting {
		if held, why, _ := h.held(); held {
			r.Paused, r.PauseReason = true, why
		}
	}
	if pl, ok := p.exec.(placer); ok {
		for i := range r.Workers {
			if ref, state, _, ok := pl.where(r.Workers[i].JobID); ok && r.Workers[i].JobID != "" {
				r.Workers[i].ClusterJobID, r.Workers[i].ClusterState = ref, state
			}
		}
	}
	return r
}
