package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/audit"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/runner"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/xfer"
)

// incomingPrefix names upload directories that are not a job yet.
const incomingPrefix = ".incoming-"

// validateSubmission checks everything about a submission that can be
// checked before a byte is stored.
func (s *Server) validateSubmission(sub *protocol.Submit) (total int64, err error) {
	if sub.SubmissionID != "" && !protocol.ValidSubmissionID(sub.SubmissionID) {
		return 0, protocol.Errorf(protocol.CodeBadRequest, "submission_id must be 1 to 128 letters, digits or . _ : -")
	}
	n := len(sub.Files)
	switch {
	case n == 0:
		return 0, protocol.Errorf(protocol.CodeBadRequest, "a job needs at least one file")
	case n > s.cfg.MaxFilesPerJob || n > protocol.MaxFilesAbsolute:
		return 0, protocol.Errorf(protocol.CodeTooLarge, "too many files: %d, at most %d per job (MAX_FILES_PER_JOB)", n, s.cfg.MaxFilesPerJob)
	}
	if err := protocol.ValidateOptions(sub.Options); err != nil {
		return 0, protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	}
	// The options must also fit in the script's environment as the runner
	// builds it (escaped in RECON_OPTIONS_JSON they may take six times
	// their size): a job whose script cannot start is not accepted.
	if _, err := runner.OptionsEnv(sub.Options); err != nil {
		return 0, protocol.Errorf(protocol.CodeBadRequest, "options do not fit in the reconstruction script's environment: %v", err)
	}
	if err := checkSlurmOptions(s.cfg, sub.Options); err != nil {
		return 0, protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	}
	seen := make(map[string]string, n)
	for _, f := range sub.Files {
		if err := protocol.ValidateFileName(f.Name); err != nil {
			return 0, protocol.Errorf(protocol.CodeInvalidName, "%v", err)
		}
		if other, dup := seen[protocol.FoldName(f.Name)]; dup && other == f.Name {
			return 0, protocol.Errorf(protocol.CodeInvalidName, "file name %q is given twice: the files of a job are stored by name, so each needs a name of its own", f.Name)
		} else if dup {
			return 0, protocol.Errorf(protocol.CodeInvalidName, "file names %q and %q are the same file on a case-insensitive file system", other, f.Name)
		}
		seen[protocol.FoldName(f.Name)] = f.Name
		if f.Size < 0 {
			return 0, protocol.Errorf(protocol.CodeBadRequest, "file %q has a negative size", f.Name)
		}
		if f.Size > s.cfg.MaxJobInputBytes-total {
			return 0, protocol.Errorf(protocol.CodeTooLarge, "the files add up to more than %d bytes (MAX_JOB_INPUT_BYTES)", s.cfg.MaxJobInputBytes)
		}
		total += f.Size
	}
	// The job must be describable in one message: its file list, with the
	// hashes the server adds, has a cap.
	list := make([]protocol.FileSum, n)
	for i, f := range sub.Files {
		list[i] = protocol.FileSum{Name: f.Name, Size: f.Size, SHA256: zeroSHA256}
	}
	if size := protocol.FileListSize(list); size > protocol.MaxFileListBytes {
		return 0, protocol.Errorf(protocol.CodeTooLarge, "the list of %d files takes %d bytes, at most %d: send fewer files, or shorter names, per job",
			n, size, protocol.MaxFileListBytes)
	}
	return total, nil
}

var zeroSHA256 = strings.Repeat("0", protocol.SHA256HexLen)

// receiveSubmission runs the submit request: validate, stream every file to
// disk with its hash checked, then commit the job. An upload with a
// submission id that breaks is kept for resuming (see upload and
// resume.go).
//
// The job belongs to identity; a submission id names a submission of that
// identity only. Every file is checked with the session's hash.
func (s *Server) receiveSubmission(ctx context.Context, c *secure.Conn, identity, hash string, sub *protocol.Submit, log *slog.Logger) (err error) {
	total, err := s.validateSubmission(sub)
	if err != nil {
		return err
	}
	u, err := s.claimUpload(ctx, c, identity, hash, sub, log)
	if err != nil {
		return err
	}
	defer func() { u.end(err) }()
	if sub.SubmissionID != "" {
		j, err := s.store.GetBySubmission(ctx, identity, sub.SubmissionID)
		if err == nil {
			u.abandon() // holds nothing: a committed upload is dropped
			if !sameJobSubmission(j, sub) {
				return submissionConflict(j, sub)
			}
			info, err := s.job(ctx, identity, hash, j.ID)
			if err != nil {
				return err
			}
			log.Info("submission already known", "job_id", j.ID, "submission_id", sub.SubmissionID)
			return protocol.WriteMessage(c, protocol.TypeSubmitReady, protocol.SubmitReady{Existing: true, Job: info})
		}
		if !errors.Is(err, jobs.ErrNotFound) {
			return rpc.Internal(err)
		}
	}
	ready, err := u.begin(ctx, total)
	if err != nil {
		return err
	}
	if err := protocol.WriteMessage(c, protocol.TypeSubmitReady, ready); err != nil {
		return err
	}
	start := time.Now()
	files, err := u.receive(ctx)
	log, id := u.log, u.id
	if err != nil {
		log.Warn("upload failed", "err", err)
		s.armWrite(c) // for the error reply
		return rpc.Fatal(err)
	}
	if err := u.commit(); err != nil {
		return err
	}
	// Audited before the job exists: a job is never queued unaudited.
	if err := s.record(ctx, audit.Record{Kind: audit.KindSubmit, Identity: identity, Peer: c.RemoteAddr().String(),
		JobID: id, Files: auditFiles(files, false)}); err != nil {
		os.RemoveAll(s.inputDir(id))
		return err
	}
	j, created, err := s.store.Create(ctx, &jobs.Job{
		ID:           id,
		Identity:     identity,
		SubmissionID: sub.SubmissionID,
		State:        jobs.Queued,
		Files:        files,
		Options:      sub.Options,
		ClientAddr:   c.RemoteAddr().String(),
		SubmittedAt:  time.Now(),
	})
	if err != nil {
		os.RemoveAll(s.inputDir(id))
		return rpc.Internal(fmt.Errorf("commit job: %w", err))
	}
	if !created {
		// A retry of the same submission won the race: keep that one.
		os.RemoveAll(s.inputDir(id))
	} else {
		s.metrics.bytesIn.Add(float64(total - u.have))
		log.Info("job queued", "files", len(files), "bytes", total,
			"seconds", time.Since(start).Seconds(), "submission_id", sub.SubmissionID)
		s.changed.JobChanged(id, false)
	}
	// The answer describes the job as it was committed: queued, with its
	// position then (a worker may have claimed it since).
	info := viewFor(jobInfo(j), j, hash)
	if j.State == jobs.Queued {
		if pos, err := s.store.QueuePosition(ctx, j.ID); err == nil {
			info.Position = pos
		}
	}
	s.armWrite(c)
	return protocol.WriteMessage(c, protocol.TypeJob, info)
}

// receiveFiles reads each announced file's bytes and its FileDone, writes
// it under dir, checks its size and its digest under hash (the session's
// end-to-end hash) and fsyncs it. The client must
// keep up MinTransferRate, with grace to start and to pause. Any error
// leaves the caller to remove (or keep) dir.
//
// A resumed upload has offs: the first `whole` files are in dir already
// (their digests in sums, or read back from disk) and the client sends none
// of their bytes; file i then has offs[i] bytes in its part, which are read
// back into the hash before the rest arrives. sums, if not nil, records
// the digest of each file verified whole, as "<hash>:<digest>": a resume
// in a session with another hash reads the file back.
//
// written counts the bytes written to disk.
func receiveFiles(ctx context.Context, msgs *protocol.Budget, c *secure.Conn, dir, hash string, announced []protocol.FileInfo, offs []int64, whole int, sums []string, grace time.Duration, written *atomic.Int64) ([]jobs.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, rpc.Internal(err)
	}
	defer root.Close()
	pace := newPacer(grace)
	src := &pacedReader{c: c, p: pace}
	defer c.SetReadDeadline(time.Time{})
	files := make([]jobs.File, 0, len(announced))
	for i, fi := range announced {
		var off int64
		if offs != nil {
			off = offs[i]
		}
		var sum string
		if i < whole {
			sum, _ = strings.CutPrefix(sums[i], hash+":")
			if sum == sums[i] {
				if sum, err = hashFile(filepath.Join(dir, fi.Name), hash, fi.Size); err != nil {
					return nil, rpc.Internal(err)
				}
			}
			pace.restart()
			if err := readFileDone(ctx, msgs, src, fi.Name, hash, sum, off); err != nil {
				return nil, err
			}
		} else {
			sum, err = receiveFile(ctx, msgs, root, src, pace, hash, i, fi, off, written)
			if err != nil {
				return nil, err
			}
		}
		if sums != nil {
			sums[i] = hash + ":" + sum
		}
		f := jobs.File{Name: fi.Name, Size: fi.Size, SHA256: sum}
		if hash == protocol.HashBLAKE3 {
			f.SHA256, f.BLAKE3 = "", sum
		}
		files = append(files, f)
	}
	return files, nil
}

// receiveFile receives file i into its part (after the off bytes the part
// holds), checks it and renames it to its name.
func receiveFile(ctx context.Context, msgs *protocol.Budget, root *os.Root, src io.Reader, pace *pacer, hash string, i int, fi protocol.FileInfo, off int64, written *atomic.Int64) (string, error) {
	part := partName(i)
	flag := os.O_RDWR | os.O_CREATE
	if off == 0 {
		flag |= os.O_TRUNC
	}
	f, err := root.OpenFile(part, flag, 0o600)
	if err != nil {
		return "", diskError(err)
	}
	defer f.Close()
	h := protocol.NewHash(hash)
	if off > 0 {
		if _, err := io.CopyN(h, f, off); err != nil {
			return "", rpc.Internal(fmt.Errorf("read back the kept part of %q: %w", fi.Name, err))
		}
		pace.restart()
	}
	if _, err := xfer.Copy(&diskWriter{xfer.NewSyncingWriter(f), written}, src, fi.Size-off, h); err != nil {
		// What arrived is kept on disk for a resume.
		xfer.Sync(f)
		return "", uploadError(fi.Name, err)
	}
	sum := protocol.HexSum(h)
	if err := readFileDone(ctx, msgs, src, fi.Name, hash, sum, off); err != nil {
		return "", err
	}
	if err := xfer.Sync(f); err != nil {
		return "", diskError(err)
	}
	if err := f.Close(); err != nil {
		return "", diskError(err)
	}
	if err := root.Rename(part, fi.Name); err != nil {
		return "", diskError(err)
	}
	return sum, nil
}

// readFileDone reads the FileDone that ends a file and checks its digest
// under hash against sum, the server's of the whole file (off bytes of
// which it had kept from an earlier attempt).
func readFileDone(ctx context.Context, msgs *protocol.Budget, src io.Reader, name, hash, sum string, off int64) error {
	m, err := msgs.ReadMessage(ctx, src)
	if err != nil {
		if pe := rpc.MessageError(err, "server"); pe != nil {
			return pe
		}
		return uploadError(name, err)
	}
	var done protocol.FileDone
	if err := m.Decode(protocol.TypeFileDone, &done); err != nil {
		return rpc.BadRequest(fmt.Errorf("file %q: %w", name, err))
	}
	got, ok := done.Digest(hash)
	if !ok {
		return rpc.BadRequest(fmt.Errorf("file %q: file_done must carry the %s digest (the session's hash) and no other", name, hash))
	}
	if got != sum {
		if off > 0 {
			return protocol.Errorf(protocol.CodeHashMismatch, "file %q: %s mismatch after resuming at byte %d: the bytes the server kept differ from the client's file; the kept upload was dropped, submit again", name, hashTitle(hash), off)
		}
		return protocol.Errorf(protocol.CodeHashMismatch, "file %q: %s mismatch: the server received different bytes than the client read", name, hashTitle(hash))
	}
	return nil
}

// diskWriter marks the errors of writing an upload to disk, so they are
// told apart from the network's, and counts the bytes written in n.
type diskWriter struct {
	w io.Writer
	n *atomic.Int64
}

type diskErr struct{ err error }

func (e *diskErr) Error() string { return e.err.Error() }
func (e *diskErr) Unwrap() error { return e.err }

func (d *diskWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.n.Add(int64(n))
	if err != nil {
		err = &diskErr{err}
	}
	return n, err
}

// diskError is the error for a failure to store an upload: the client is
// told the disk is full, or (for anything else) that the server failed.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return protocol.Errorf(protocol.CodeNoSpace, "the server ran out of disk space during the upload; try again later")
	}
	return rpc.Internal(err)
}

// uploadError is the error for a file whose bytes could not be received:
// a failure to store them, a client too slow, or a broken stream (which
// cannot carry an answer).
func uploadError(name string, err error) error {
	var de *diskErr
	switch {
	case errors.As(err, &de):
		return diskError(fmt.Errorf("file %q: %w", name, de.err))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return protocol.Errorf(protocol.CodeTimeout, "file %q: the upload stalled or was slower than %d bytes/s; try again", name, MinTransferRate)
	}
	return fmt.Errorf("file %q: %w", name, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(dir), err)
	}
	return nil
}

// freeBytes is the space available to this (unprivileged or not) process
// on the file system holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs: %w", err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// hashTitle is the name of an end-to-end hash as messages spell it.
func hashTitle(hash string) string {
	if hash == protocol.HashBLAKE3 {
		return "BLAKE3"
	}
	return "SHA-256"
}
