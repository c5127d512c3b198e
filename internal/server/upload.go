package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// upload is one submission being received. Until it ends it owns its
// directory (incomingPrefix + job id, in the input dir), its record as a
// resumable upload (when the submission has an id and UPLOAD_RESUME_HOURS
// is on) and the disk space reserved for it.
//
// claimUpload starts one, begin admits it and makes its directory, receive
// takes the files, and commit makes the directory the job's input. The
// caller defers end, which releases the reservation and ends the upload
// as its error allows: a committed upload's record is dropped, one that
// broke while being received (or was refused before a byte came) is
// parked for resuming, anything else is abandoned: removed.
type upload struct {
	s        *Server
	c        *secure.Conn
	identity string // the client identity: its submission ids, its caps
	hash     string // the session's end-to-end hash
	sub      *protocol.Submit
	log      *slog.Logger

	id  string // the job's id
	dir string // the upload directory
	// p is the upload's record as a resumable one, nil when it has none:
	// busy for this session until the upload ends.
	p     *partial
	offs  []int64 // bytes of each file kept from an earlier session
	whole int     // the first whole files are kept whole
	have  int64   // the sum of offs
	res   *reservation

	receiving bool // the client was told to send its files
	committed bool // the directory is the job's input now
	done      bool // parked or abandoned
}

// claimUpload starts an upload of sub for the session on c. A broken
// upload of the same submission kept for resuming is claimed (see
// partials.claim): it is this one's until it ends.
func (s *Server) claimUpload(ctx context.Context, c *secure.Conn, identity, hash string, sub *protocol.Submit, log *slog.Logger) (*upload, error) {
	u := &upload{s: s, c: c, identity: identity, hash: hash, sub: sub, log: log}
	if s.cfg.UploadResume > 0 && sub.SubmissionID != "" {
		p, err := s.partials.claim(ctx, identity, sub, func() { c.Close() })
		if err != nil {
			return nil, err
		}
		if p != nil {
			u.p, u.id, u.dir = p, p.JobID, p.dir
		}
	}
	return u, nil
}

// begin admits an upload of total bytes: it reads what a claimed upload
// kept (and starts over if that is unusable), reserves the disk space for
// the rest, and makes a new upload's directory, registered for resuming
// when the submission has an id. It returns the answer for the client.
func (u *upload) begin(ctx context.Context, total int64) (protocol.SubmitReady, error) {
	s, sub := u.s, u.sub
	if u.p != nil {
		var err error
		if u.offs, u.whole, err = u.p.offsets(); err != nil {
			u.log.Warn("broken upload unusable; starting over", "submission_id", sub.SubmissionID, "err", err)
			os.RemoveAll(u.dir)
			s.partials.drop(u.p)
			u.p, u.id, u.dir, u.offs, u.whole = nil, "", "", nil, 0
		}
	}
	for _, o := range u.offs {
		u.have += o
	}
	ready := protocol.SubmitReady{}
	res, err := s.reserveUpload(ctx, u.identity, total-u.have, u.log)
	if err != nil {
		return ready, err
	}
	u.res = res
	if u.p == nil && sub.SubmissionID != "" && s.partials.takeEvicted(u.identity, sub.SubmissionID) {
		ready.Note = evictedNote
		u.log.Info("kept upload was removed; the client sends every file again", "submission_id", sub.SubmissionID)
	}
	if u.p != nil {
		u.log.Info("upload resumed", "job_id", u.id, "submission_id", sub.SubmissionID, "bytes_kept", u.have, "bytes", total)
	} else if err := u.create(clientOf(u.c.RemoteAddr())); err != nil {
		return ready, err
	}
	if u.have > 0 || u.whole > 0 {
		ready.Resume = u.offs
	}
	return ready, nil
}

// create makes the directory of a new upload and, for a submission with
// an id, registers it for resuming.
func (u *upload) create(client string) error {
	s, sub := u.s, u.sub
	id := jobs.NewID()
	dir := filepath.Join(s.cfg.InputBaseDir, incomingPrefix+id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return rpc.Internal(fmt.Errorf("create upload dir: %w", err))
	}
	u.id, u.dir = id, dir
	if s.cfg.UploadResume <= 0 || sub.SubmissionID == "" {
		return nil
	}
	p := &partial{
		manifest: manifest{SubmissionID: sub.SubmissionID, JobID: id, Files: sub.Files, Options: sub.Options, Client: client, Identity: u.identity},
		dir:      dir, sums: make([]string, len(sub.Files)),
	}
	if err := writeManifest(dir, &p.manifest); err != nil {
		return rpc.Internal(fmt.Errorf("write upload manifest: %w", err))
	}
	if err := s.partials.add(p, func() { u.c.Close() }); err != nil {
		return err
	}
	u.p = p
	return nil
}

// receive takes the files from the client into the upload's directory,
// after what was kept of them. From here on the upload's log records
// carry its job id.
func (u *upload) receive(ctx context.Context) ([]jobs.File, error) {
	u.log = u.log.With("job_id", u.id)
	var sums []string
	if u.p != nil {
		sums = u.p.sums
	}
	u.receiving = true
	return receiveFiles(ctx, u.s.msgs, u.c, u.dir, u.hash, u.sub.Files, u.offs, u.whole, sums, u.s.opts.IdleTimeout, &u.res.written)
}

// commit makes the received upload the job's input directory, durably.
// Once renamed the directory is the job's: an error after that removes it.
func (u *upload) commit() error {
	s := u.s
	if u.p != nil {
		if err := os.Remove(filepath.Join(u.dir, manifestName)); err != nil {
			return rpc.Internal(err)
		}
	}
	if err := syncDir(u.dir); err != nil {
		return rpc.Internal(err)
	}
	if err := os.Rename(u.dir, s.inputDir(u.id)); err != nil {
		return rpc.Internal(fmt.Errorf("commit upload dir: %w", err))
	}
	u.committed = true
	if err := syncDir(s.cfg.InputBaseDir); err != nil {
		os.RemoveAll(s.inputDir(u.id))
		return rpc.Internal(err)
	}
	return nil
}

// end ends the upload once its session is done with it, err being how
// the session's request ended: see upload.
func (u *upload) end(err error) {
	switch {
	case u.done:
	case u.committed:
		u.release()
		if u.p != nil {
			u.s.partials.drop(u.p)
		}
	case u.p != nil && (!u.receiving || keepable(err)):
		u.park(err)
	default:
		u.abandon()
	}
}

// park keeps a resumable upload for its client to resume within
// UPLOAD_RESUME_HOURS: refused before a byte was received (queue full, no
// space), or broken while receiving.
func (u *upload) park(err error) {
	s := u.s
	u.done = true
	u.release()
	now := time.Now()
	os.Chtimes(filepath.Join(u.dir, manifestName), now, now)
	s.partials.park(u.p, now.Add(s.cfg.UploadResume))
	msg := "upload broken; kept for resuming"
	if !u.receiving {
		msg = "upload not resumed now; still kept for resuming"
	}
	u.log.Info(msg, "submission_id", u.sub.SubmissionID, "resume_hours", s.cfg.UploadResume.Hours(), "err", err)
	s.capKeptUploads()
}

// abandon removes the upload: its directory, its record as a resumable
// one, its reservation.
func (u *upload) abandon() {
	u.done = true
	if u.dir != "" {
		os.RemoveAll(u.dir)
	}
	u.release()
	if u.p != nil {
		u.s.partials.drop(u.p)
	}
}

func (u *upload) release() {
	if u.res != nil {
		u.s.uploads.release(u.res)
	}
}
