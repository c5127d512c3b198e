package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
)

// Disk space held for clients. Three things hold space on the input disk
// besides queued jobs: uploads in progress (a reservation of their
// announced size, taken before the first byte), broken uploads kept for
// resuming, and, on the output disk, results waiting to be fetched. No
// client may hold more than its share of the first two, so that one slow
// or broken client cannot make every other client's submission fail with
// no_space:
//
//   - uploads in progress: at most MAX_RESERVED_BYTES_PER_CLIENT per
//     client address, and in all what the disk has free above
//     MIN_FREE_DISK_MB;
//   - kept uploads: at most MAX_KEPT_UPLOAD_BYTES_PER_CLIENT per client
//     address and MAX_KEPT_UPLOAD_BYTES in all; over either, the oldest
//     are removed;
//   - a submission refused for lack of space first removes what can go:
//     the outputs of failed jobs (kept with KEEP_FAILED_OUTPUTS), then the
//     kept uploads, oldest first, until it fits.
//
// A client is its address: the remote IP of the session. A relay names no
// client to its backends, so every client of a relay counts as the relay.

// Default caps (a key set to 0): the share of the input disk's usable
// space, its size less MIN_FREE_DISK_MB. Half for one client's uploads in
// progress leaves the other half to everyone else; kept uploads, which
// wait for a client that may never come back, get a quarter per client
// and half in all.
const (
	defaultReservedShare   = 2 // MAX_RESERVED_BYTES_PER_CLIENT = usable / 2
	defaultKeptClientShare = 4 // MAX_KEPT_UPLOAD_BYTES_PER_CLIENT = usable / 4
	defaultKeptTotalShare  = 2 // MAX_KEPT_UPLOAD_BYTES = usable / 2
)

// maxEvictedRemembered bounds the submission ids of removed kept uploads
// the server remembers, to tell their clients why they start over.
const maxEvictedRemembered = 10_000

// spaceCaps are the caps in force, in bytes.
type spaceCaps struct {
	reservedPerClient int64
	keptPerClient     int64
	keptTotal         int64
}

// newSpaceCaps reads the caps from cfg, filling in the defaults from the
// size of the input disk.
func newSpaceCaps(cfg *config.Server) (spaceCaps, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.InputBaseDir, &st); err != nil {
		return spaceCaps{}, fmt.Errorf("RECON_SERVER_BASE_PFILE_DIR: statfs: %w", err)
	}
	usable := max(int64(st.Blocks)*int64(st.Bsize)-cfg.MinFreeDiskBytes, 0)
	pick := func(v, share int64) int64 {
		if v > 0 {
			return v
		}
		return usable / share
	}
	return spaceCaps{
		reservedPerClient: pick(cfg.MaxReservedPerClient, defaultReservedShare),
		keptPerClient:     pick(cfg.MaxKeptUploadPerClient, defaultKeptClientShare),
		keptTotal:         pick(cfg.MaxKeptUploadBytes, defaultKeptTotalShare),
	}, nil
}

// clientOf is the address a kept upload came from, for admins: its
// remote IP. The caps are counted per client identity.
func clientOf(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	return ap.Addr().Unmap().WithZone("").String()
}

// reservation is the disk space promised to one upload in progress: the
// bytes still to come when it was admitted, of which written are on disk
// by now (and so already missing from the free space).
type reservation struct {
	client  string
	n       int64
	written atomic.Int64
}

// reservations tracks uploads in progress: the disk space promised to
// them, in all and per client, so two uploads cannot both count on the
// same free space and one client cannot take it all; and their number, so
// they cannot together overfill the queue.
type reservations struct {
	mu       sync.Mutex
	all      map[*reservation]struct{}
	byClient map[string]int64 // sum of n
}

func newReservations() *reservations {
	return &reservations{all: map[*reservation]struct{}{}, byClient: map[string]int64{}}
}

// clientCapError refuses an upload that would take its client over
// MAX_RESERVED_BYTES_PER_CLIENT.
type clientCapError struct {
	client         string
	held, n, limit int64
}

func (e *clientCapError) Error() string {
	if e.held == 0 {
		return fmt.Sprintf("this submission needs %d bytes, more than the %d bytes of disk space one client may hold with uploads in progress (MAX_RESERVED_BYTES_PER_CLIENT)",
			e.n, e.limit)
	}
	return fmt.Sprintf("uploads in progress of this client identity (%s) already hold %d bytes; with this submission's %d bytes that is more than the %d bytes of disk space one client may hold (MAX_RESERVED_BYTES_PER_CLIENT): wait for them to finish, then try again",
		e.client, e.held, e.n, e.limit)
}

// reserve admits an upload of n more bytes from client when the queue has
// room for it besides the others in progress, the disk keeps `keep` bytes
// free with every upload in progress counted (avail is the free space
// now), and the client stays within perClient.
//
// mine are client's queued jobs; with its uploads in progress they must
// stay under maxMine (0: no cap of its own).
func (r *reservations) reserve(client string, n, perClient, avail, keep int64, queued, maxQueued, mine, maxMine int) (*reservation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if queued+len(r.all) >= maxQueued {
		return nil, errQueueFull
	}
	if maxMine > 0 {
		for res := range r.all {
			if res.client == client {
				mine++
			}
		}
		if mine >= maxMine {
			return nil, errClientQueueFull
		}
	}
	if avail-r.pendingLocked()-n < keep {
		return nil, errNoSpace
	}
	if err := r.overCapLocked(client, n, perClient); err != nil {
		return nil, err
	}
	res := &reservation{client: client, n: n}
	r.all[res] = struct{}{}
	r.byClient[client] += n
	return res, nil
}

// overCap returns the error for an upload of n bytes that would take
// client over perClient, or nil.
func (r *reservations) overCap(client string, n, perClient int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.overCapLocked(client, n, perClient)
}

func (r *reservations) overCapLocked(client string, n, perClient int64) error {
	if held := r.byClient[client]; n > perClient-held {
		return &clientCapError{client: client, held: held, n: n, limit: perClient}
	}
	return nil
}

// pending is the space promised to uploads in progress and not yet
// written.
func (r *reservations) pending() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pendingLocked()
}

// pendingLocked is the space promised and not yet written.
func (r *reservations) pendingLocked() int64 {
	var p int64
	for res := range r.all {
		p += max(res.n-res.written.Load(), 0)
	}
	return p
}

func (r *reservations) release(res *reservation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.all, res)
	if r.byClient[res.client] -= res.n; r.byClient[res.client] <= 0 {
		delete(r.byClient, res.client)
	}
}

// usage returns the uploads in progress, the bytes promised to them and
// the bytes of those already written.
func (r *reservations) usage() (count int, reserved, written int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for res := range r.all {
		reserved += res.n
		written += min(res.written.Load(), res.n)
	}
	return len(r.all), reserved, written
}

var (
	errQueueFull = errors.New("queue full")
	// errClientQueueFull refuses an upload over MAX_QUEUED_JOBS_PER_CLIENT.
	errClientQueueFull = errors.New("client's share of the queue full")
	errNoSpace         = errors.New("no space")
)

// reserveUpload admits an upload of n bytes from client. When the disk is
// short, it removes what may be removed to make room (see makeRoom), one
// submission at a time, and tries again.
func (s *Server) reserveUpload(ctx context.Context, client string, n int64, log *slog.Logger) (*reservation, error) {
	res, err := s.tryReserve(ctx, client, n)
	if !errors.Is(err, errNoSpace) {
		return res, err
	}
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	tried := map[string]bool{} // failed jobs whose outputs were removed
	for first := true; ; first = false {
		// Nothing is removed for a submission that would not fit even
		// then, or that its client may not make now.
		if first {
			avail, err := s.uploadSpace()
			if err != nil {
				return nil, rpc.Internal(err)
			}
			// A negative avail: another disk the job needs is full, which
			// nothing removed from the input disk would change.
			if avail < 0 || avail+s.evictable(ctx)-s.uploads.pending()-n < s.cfg.MinFreeDiskBytes {
				return nil, noSpace(s.cfg, n)
			}
			if err := s.uploads.overCap(client, n, s.caps.reservedPerClient); err != nil {
				return nil, protocol.Errorf(protocol.CodeNoSpace, "%v", err)
			}
		}
		if !s.makeRoom(ctx, tried, log) {
			return nil, noSpace(s.cfg, n)
		}
		if res, err = s.tryReserve(ctx, client, n); !errors.Is(err, errNoSpace) {
			return res, err
		}
	}
}

func noSpace(cfg *config.Server, n int64) error {
	return protocol.Errorf(protocol.CodeNoSpace, "not enough disk space on the server for %d bytes (keeping %d MB free, MIN_FREE_DISK_MB); try again later", n, cfg.MinFreeDiskBytes>>20)
}

// tryReserve admits an upload of n bytes from client if there is room
// now. It returns errNoSpace, or the error for the client.
func (s *Server) tryReserve(ctx context.Context, client string, n int64) (*reservation, error) {
	queued, err := s.store.QueuedCount(ctx)
	if err != nil {
		return nil, rpc.Internal(err)
	}
	mine, maxMine := 0, s.cfg.MaxQueuedJobsPerClient
	if maxMine > 0 {
		if mine, err = s.store.QueuedCountOf(ctx, client); err != nil {
			return nil, rpc.Internal(err)
		}
	}
	avail, err := s.uploadSpace()
	if err != nil {
		return nil, rpc.Internal(err)
	}
	res, err := s.uploads.reserve(client, n, s.caps.reservedPerClient, avail, s.cfg.MinFreeDiskBytes, queued+s.partials.waiting(), s.cfg.MaxQueuedJobs, mine, maxMine)
	var ce *clientCapError
	switch {
	case errors.As(err, &ce):
		return nil, protocol.Errorf(protocol.CodeNoSpace, "%v", ce)
	case errors.Is(err, errQueueFull):
		return nil, protocol.Errorf(protocol.CodeQueueFull, "the queue is full (MAX_QUEUED_JOBS = %d); try again later", s.cfg.MaxQueuedJobs)
	case errors.Is(err, errClientQueueFull):
		return nil, protocol.Errorf(protocol.CodeQueueFull, "this client has %d jobs waiting or being uploaded, its share of the queue (MAX_QUEUED_JOBS_PER_CLIENT = %d); try again when some have started", maxMine, maxMine)
	}
	return res, err
}

// makeRoom removes one thing that holds disk space and may go for a new
// submission: the oldest failed job's outputs (if they are on the input
// disk; not one in tried, to which it adds), else the oldest broken
// upload kept for resuming. It reports whether it removed anything.
func (s *Server) makeRoom(ctx context.Context, tried map[string]bool, log *slog.Logger) bool {
	if sameDisk(s.cfg.InputBaseDir, s.cfg.OutputBaseDir) {
		if j := s.oldestFailedOutput(ctx, tried); j != nil {
			tried[j.ID] = true
			if err := os.RemoveAll(s.outputDir(j.ID)); err != nil {
				log.Warn("remove a failed job's outputs to make room", "failed_job_id", j.ID, "err", err)
			} else {
				log.Info("failed job's outputs removed to make room for a submission", "failed_job_id", j.ID)
				if err := s.store.MarkResultsRemoved(ctx, j.ID); err != nil {
					log.Warn("record results removed", "failed_job_id", j.ID, "err", err)
				}
				s.changed.JobChanged(j.ID, false)
				return true
			}
		}
	}
	if p := s.partials.evictOldest(); p != nil {
		log.Info("kept upload removed to make room for a submission", "kept_submission_id", p.SubmissionID, "kept_client", p.Client, "kept_bytes", p.kept)
		if err := os.RemoveAll(p.dir); err != nil {
			log.Warn("remove kept upload", "kept_submission_id", p.SubmissionID, "err", err)
		}
		return true
	}
	return false
}

// evictable is the space makeRoom could free, as far as it is known: the
// bytes of the kept uploads, and of the failed jobs' results on the input
// disk.
func (s *Server) evictable(ctx context.Context) int64 {
	_, n := s.partials.usage()
	if sameDisk(s.cfg.InputBaseDir, s.cfg.OutputBaseDir) {
		list, err := s.store.ResultsToExpire(ctx, time.Now())
		if err != nil {
			s.log.Warn("list results", "err", err)
		}
		for _, j := range list {
			if j.State == jobs.Failed && j.DeliveredAt.IsZero() {
				for _, f := range j.Results {
					n += f.Size
				}
			}
		}
	}
	return n
}

// oldestFailedOutput returns the failed job, not in skip, whose outputs
// have waited longest, or nil.
func (s *Server) oldestFailedOutput(ctx context.Context, skip map[string]bool) *jobs.Job {
	list, err := s.store.ResultsToExpire(ctx, time.Now())
	if err != nil {
		s.log.Warn("list results", "err", err)
		return nil
	}
	for _, j := range list {
		if j.State == jobs.Failed && j.DeliveredAt.IsZero() && !skip[j.ID] {
			return j
		}
	}
	return nil
}

// sameDisk reports whether a and b are on one file system (or cannot be
// told apart).
func sameDisk(a, b string) bool {
	var sa, sb syscall.Stat_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return true
	}
	return sa.Dev == sb.Dev
}

// capKeptUploads removes the oldest kept uploads of clients over
// MAX_KEPT_UPLOAD_BYTES_PER_CLIENT, then the oldest of all while they
// are over MAX_KEPT_UPLOAD_BYTES.
func (s *Server) capKeptUploads() {
	for _, p := range s.partials.overCaps(s.caps.keptPerClient, s.caps.keptTotal) {
		s.log.Info("kept upload removed: over the space kept for broken uploads (MAX_KEPT_UPLOAD_BYTES_PER_CLIENT, MAX_KEPT_UPLOAD_BYTES)",
			"submission_id", p.SubmissionID, "client", p.Client, "bytes_kept", p.kept)
		os.RemoveAll(p.dir)
	}
}

// evictedNote is what the client of a removed kept upload is told when it
// comes back to resume it.
const evictedNote = "the part of this upload the server had kept for resuming was removed (to make room for other submissions, or over the space kept for broken uploads); every file is sent again from the start"

// failedOutputs handles the outputs of a job that failed in out, with the
// results collected from it: removed at once, unless KEEP_FAILED_OUTPUTS
// keeps results for fetching. An output without results is always
// removed. It returns the results the job keeps.
func (p *pool) failedOutputs(log *slog.Logger, out string, files []jobs.File) []jobs.File {
	if p.cfg.KeepFailedOutputs && len(files) > 0 {
		log.Info("failed job's outputs kept for fetching (KEEP_FAILED_OUTPUTS)", "results", len(files))
		return files
	}
	if err := os.RemoveAll(out); err != nil {
		log.Warn("remove failed job's outputs", "err", err)
	}
	return nil
}

// spaceUse describes how the space is held, for admin status.
func (s *Server) spaceUse(ctx context.Context) protocol.SpaceUse {
	u := protocol.SpaceUse{
		MaxReservedBytesPerClient:   s.caps.reservedPerClient,
		MaxKeptUploadBytesPerClient: s.caps.keptPerClient,
		MaxKeptUploadBytes:          s.caps.keptTotal,
		KeepFailedOutputs:           s.cfg.KeepFailedOutputs,
	}
	u.Uploads, u.ReservedBytes, u.ReceivedBytes = s.uploads.usage()
	u.KeptUploads, u.KeptUploadBytes = s.partials.usage()
	list, err := s.store.ResultsToExpire(ctx, time.Now())
	if err != nil {
		s.log.Warn("list results", "err", err)
		u.Results, u.ResultBytes = -1, -1
		return u
	}
	for _, j := range list {
		if !j.DeliveredAt.IsZero() {
			continue
		}
		var n int64
		for _, f := range j.Results {
			n += f.Size
		}
		if j.State == jobs.Failed {
			u.FailedOutputs++
			u.FailedOutputBytes += n
		}
		u.Results++
		u.ResultBytes += n
	}
	return u
}
