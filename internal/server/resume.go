package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
)

// Resumable uploads. An upload with a submission id that breaks (the
// connection drops, or stalls) is not thrown away: its directory keeps the
// files received whole, under their names, and the received part of the
// next one, for UPLOAD_RESUME_HOURS. When the client submits again with
// the same submission id and the same files and options, the server
// answers with how many bytes of each file it holds (SubmitReady.Resume),
// and the client sends only the rest. The server hashes what it holds from
// disk (or remembers the hash of a file it verified whole) and continues
// the hash with the new bytes, so a resumed file is checked against the
// client's SHA-256 of the whole file like any other: a part that differs
// from the client's file is a hash mismatch, and the upload is dropped.
//
// A manifest in the directory (manifestName) names the submission, so an
// upload broken by a server restart or crash can be resumed too.

// Names inside an upload directory that no uploaded file can have: ':' is
// refused in file names (protocol.ValidateFileName).
const manifestName = "upload:manifest.json"

func partName(i int) string { return fmt.Sprintf("part:%d", i) }

// manifest is what an upload directory records about its submission.
type manifest struct {
	SubmissionID string              `json:"submission_id"`
	JobID        string              `json:"job_id"`
	Files        []protocol.FileInfo `json:"files"`
	Options      map[string]string   `json:"options,omitempty"`
	// Client is the address of the client that sent it (see clientOf).
	Client string `json:"client,omitempty"`
	// Identity is the client identity that sent it; its submission ids
	// are its own ("" in a manifest from before identities: "default").
	Identity string `json:"identity,omitempty"`
}

// owner is the identity of the upload.
func (m *manifest) owner() string {
	if m.Identity == "" {
		return config.DefaultIdentity
	}
	return m.Identity
}

// key is the upload's key among the partials: its submission id, which is
// one identity's own.
func (m *manifest) key() string { return partialKey(m.owner(), m.SubmissionID) }

// partialKey joins an identity and a submission id; neither may contain
// '/'.
func partialKey(identity, sid string) string { return identity + "/" + sid }

// partial is an upload that may be resumed: being received (busy) or
// broken and waiting for its client until expires.
type partial struct {
	manifest
	dir     string
	sums    []string // "<hash>:<digest>" of files verified whole by this process; "" unknown
	busy    bool
	kept    int64         // bytes on disk when it was last parked
	stop    func()        // ends the session receiving it (when busy)
	idle    chan struct{} // closed when it stops being busy
	expires time.Time
}

// partials are the resumable uploads, by submission id.
type partials struct {
	mu sync.Mutex
	m  map[string]*partial
	// evicted are the submission ids of uploads removed before they
	// expired (over a cap, or to make room), until they would have.
	evicted map[string]time.Time
}

// claimWait bounds how long a new session waits for the session it
// replaces to let go of an upload.
const claimWait = 10 * time.Second

// claim makes sub's upload busy for the session that stop ends. It
// returns the upload to resume, or nil when there is none. An upload still
// being received by another session is taken over: that session is ended
// (its client has most likely reconnected after a break it has not seen
// yet). An upload of other files or options under the same submission id
// is a conflict.
func (ps *partials) claim(ctx context.Context, identity string, sub *protocol.Submit, stop func()) (*partial, error) {
	deadline := time.NewTimer(claimWait)
	defer deadline.Stop()
	for {
		ps.mu.Lock()
		p := ps.m[partialKey(identity, sub.SubmissionID)]
		if p == nil {
			ps.mu.Unlock()
			return nil, nil
		}
		if !p.busy {
			if !sameSubmission(&p.manifest, sub) {
				ps.mu.Unlock()
				return nil, protocol.Errorf(protocol.CodeConflict,
					"submission id %s belongs to a broken upload of other files or options, kept for resuming: use another submission id",
					sub.SubmissionID)
			}
			p.busy, p.stop, p.idle = true, stop, make(chan struct{})
			ps.mu.Unlock()
			return p, nil
		}
		stopOther, idle := p.stop, p.idle
		ps.mu.Unlock()
		stopOther()
		select {
		case <-idle:
		case <-deadline.C:
			return nil, protocol.Errorf(protocol.CodeConflict,
				"submission id %s is being uploaded on another connection; try again later", sub.SubmissionID)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// add registers a new upload as busy. It fails when another session
// registered one with the same submission id meanwhile.
func (ps *partials) add(p *partial, stop func()) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m[p.key()] != nil {
		return protocol.Errorf(protocol.CodeConflict,
			"submission id %s is being uploaded on another connection; try again later", p.SubmissionID)
	}
	p.busy, p.stop, p.idle = true, stop, make(chan struct{})
	ps.m[p.key()] = p
	return nil
}

// park makes a busy upload wait for its client until expires.
func (ps *partials) park(p *partial, expires time.Time) {
	kept := p.keptBytes() // p is busy: its session alone writes its dir
	ps.mu.Lock()
	p.busy, p.stop, p.expires, p.kept = false, nil, expires, kept
	close(p.idle)
	ps.mu.Unlock()
}

// drop forgets a busy upload (committed, or not worth keeping).
func (ps *partials) drop(p *partial) {
	ps.mu.Lock()
	if ps.m[p.key()] == p {
		delete(ps.m, p.key())
	}
	p.busy, p.stop = false, nil
	close(p.idle)
	ps.mu.Unlock()
}

// expired removes and returns the uploads that waited too long.
func (ps *partials) expired(now time.Time) []*partial {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []*partial
	for sid, p := range ps.m {
		if !p.busy && now.After(p.expires) {
			delete(ps.m, sid)
			out = append(out, p)
		}
	}
	return out
}

// evictOldest removes and returns the kept upload waiting longest for
// its client (the one that expires first), or nil.
func (ps *partials) evictOldest() *partial {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var old *partial
	for _, p := range ps.m {
		if !p.busy && (old == nil || p.expires.Before(old.expires)) {
			old = p
		}
	}
	if old != nil {
		ps.evictLocked(old)
	}
	return old
}

// overCaps removes and returns kept uploads, oldest first: those of each
// client identity over perClient bytes in all, then those of anyone while all are
// over total bytes.
func (ps *partials) overCaps(perClient, total int64) []*partial {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var waiting []*partial
	byClient := map[string]int64{}
	var sum int64
	for _, p := range ps.m {
		if !p.busy {
			waiting = append(waiting, p)
			byClient[p.owner()] += p.kept
			sum += p.kept
		}
	}
	slices.SortFunc(waiting, func(a, b *partial) int { return a.expires.Compare(b.expires) })
	var out []*partial
	for _, p := range waiting {
		if byClient[p.owner()] > perClient {
			byClient[p.owner()] -= p.kept
			sum -= p.kept
			ps.evictLocked(p)
			out = append(out, p)
		}
	}
	for _, p := range waiting {
		if sum <= total {
			break
		}
		if ps.m[p.key()] == p {
			sum -= p.kept
			ps.evictLocked(p)
			out = append(out, p)
		}
	}
	return out
}

// evictLocked forgets p, a kept upload removed before it expired, and
// remembers its submission id until then.
func (ps *partials) evictLocked(p *partial) {
	delete(ps.m, p.key())
	if ps.evicted == nil {
		ps.evicted = map[string]time.Time{}
	}
	if len(ps.evicted) >= maxEvictedRemembered {
		now := time.Now()
		for sid, until := range ps.evicted {
			if now.After(until) || len(ps.evicted) >= maxEvictedRemembered {
				delete(ps.evicted, sid)
			}
		}
	}
	ps.evicted[p.key()] = p.expires
}

// takeEvicted reports whether the kept upload of identity's submission sid
// was removed before it expired, and forgets it.
func (ps *partials) takeEvicted(identity, sid string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	k := partialKey(identity, sid)
	until, ok := ps.evicted[k]
	delete(ps.evicted, k)
	return ok && time.Now().Before(until)
}

// usage returns the number of uploads waiting for their clients and the
// bytes they keep.
func (ps *partials) usage() (n int, bytes int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.m {
		if !p.busy {
			n++
			bytes += p.kept
		}
	}
	return n, bytes
}

// keptBytes is the number of bytes p's directory holds of its files.
func (p *partial) keptBytes() int64 {
	offs, _, err := p.offsets()
	if err != nil {
		return 0
	}
	var n int64
	for _, o := range offs {
		n += o
	}
	return n
}

// waiting returns the number of uploads waiting for their clients.
func (ps *partials) waiting() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for _, p := range ps.m {
		if !p.busy {
			n++
		}
	}
	return n
}

// list describes the kept uploads, by submission id.
func (ps *partials) list() []protocol.KeptUpload {
	ps.mu.Lock()
	kept := make([]*partial, 0, len(ps.m))
	var out []protocol.KeptUpload
	for _, p := range ps.m {
		k := protocol.KeptUpload{SubmissionID: p.SubmissionID, Client: p.Client, Identity: p.owner(), State: protocol.UploadReceiving, Files: len(p.Files)}
		if !p.busy {
			k.State = protocol.UploadWaiting
			exp := p.expires
			k.Expires = &exp
		}
		for _, f := range p.Files {
			k.Bytes += f.Size
		}
		out = append(out, k)
		kept = append(kept, p)
	}
	ps.mu.Unlock()
	// What is on disk, read outside the lock (an upload being received
	// grows meanwhile).
	for i, p := range kept {
		if offs, _, err := p.offsets(); err == nil {
			for _, o := range offs {
				out[i].BytesKept += o
			}
		}
	}
	slices.SortFunc(out, func(a, b protocol.KeptUpload) int { return strings.Compare(a.SubmissionID, b.SubmissionID) })
	return out
}

func sameSubmission(m *manifest, sub *protocol.Submit) bool {
	return slices.Equal(m.Files, sub.Files) && maps.Equal(m.Options, sub.Options)
}

// offsets returns how many bytes of each file p's directory holds, checked
// against the manifest: files before the first incomplete one are whole
// (under their names), that one may have a part. Anything else (the
// directory was tampered with) is an error.
func (p *partial) offsets() (offs []int64, whole int, err error) {
	offs = make([]int64, len(p.Files))
	for i, f := range p.Files {
		st, err := os.Lstat(filepath.Join(p.dir, f.Name))
		if err == nil {
			if !st.Mode().IsRegular() || st.Size() != f.Size {
				return nil, 0, fmt.Errorf("file %q: %d bytes on disk, %d announced", f.Name, st.Size(), f.Size)
			}
			offs[i] = f.Size
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
		st, err = os.Lstat(filepath.Join(p.dir, partName(i)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, 0, err
		case !st.Mode().IsRegular() || st.Size() > f.Size:
			return nil, 0, fmt.Errorf("file %q: part of %d bytes, %d announced", f.Name, st.Size(), f.Size)
		default:
			offs[i] = st.Size()
		}
		// The files after the first incomplete one have not started.
		return offs, i, nil
	}
	return offs, len(p.Files), nil
}

// writeManifest records the submission in the upload directory. It is not
// synced: it matters after a crash of the server process, not of the
// machine (after which the end-to-end hash still catches a damaged part).
func writeManifest(dir string, m *manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, manifestName), b, 0o600)
}

// readManifest reads an upload directory's manifest and checks it names a
// submission the server would accept.
func readManifest(dir string) (*manifest, time.Time, error) {
	p := filepath.Join(dir, manifestName)
	st, err := os.Stat(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, time.Time{}, fmt.Errorf("manifest: %w", err)
	}
	if !protocol.ValidSubmissionID(m.SubmissionID) || !jobs.ValidID(m.JobID) || len(m.Files) == 0 ||
		filepath.Base(dir) != incomingPrefix+m.JobID {
		return nil, time.Time{}, errors.New("manifest: not a valid submission")
	}
	for _, f := range m.Files {
		if protocol.ValidateFileName(f.Name) != nil || f.Size < 0 {
			return nil, time.Time{}, errors.New("manifest: not a valid submission")
		}
	}
	return &m, st.ModTime(), nil
}

// loadPartials registers the upload directories a previous run left with
// a manifest younger than UPLOAD_RESUME_HOURS, and removes the others.
// Only New calls it, before anything else uses the input dir.
func (s *Server) loadPartials(names []string) {
	now := time.Now()
	for _, name := range names {
		dir := filepath.Join(s.cfg.InputBaseDir, name)
		keep := false
		if s.cfg.UploadResume > 0 {
			m, mtime, err := readManifest(dir)
			if err == nil && now.Sub(mtime) < s.cfg.UploadResume && s.partials.m[m.key()] == nil {
				p := &partial{
					manifest: *m, dir: dir, sums: make([]string, len(m.Files)), expires: mtime.Add(s.cfg.UploadResume),
				}
				p.kept = p.keptBytes()
				s.partials.m[m.key()] = p
				keep = true
				s.log.Info("interrupted upload kept for resuming", "submission_id", m.SubmissionID, "dir", name)
			}
		}
		if !keep {
			s.log.Info("removing interrupted upload", "dir", name)
			os.RemoveAll(dir)
		}
	}
	s.capKeptUploads()
}

// sweepPartials removes the broken uploads nobody resumed in time.
func (s *Server) sweepPartials(ctx context.Context) {
	if s.cfg.UploadResume <= 0 {
		return
	}
	interval := min(max(s.cfg.UploadResume/10, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		for _, p := range s.partials.expired(time.Now()) {
			s.log.Info("broken upload expired", "submission_id", p.SubmissionID)
			os.RemoveAll(p.dir)
		}
	}
}

// keepable reports whether an upload that failed with err may be resumed:
// the connection broke or stalled. A protocol violation, a hash mismatch or
// a disk error drops it.
func keepable(err error) bool {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code == protocol.CodeTimeout
	}
	var fe *rpc.FatalError
	if errors.As(err, &fe) {
		return keepable(fe.Err)
	}
	return true
}

// hashFile returns the digest under the named hash of the file at path,
// which must hold size bytes: a file kept whole from an earlier upload,
// read back.
func hashFile(path, hash string, size int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := protocol.NewHash(hash)
	if _, err := io.CopyN(h, f, size); err != nil {
		return "", fmt.Errorf("read back %s: %w", filepath.Base(path), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
