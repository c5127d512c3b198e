package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/xfer"
)

// incomingPrefix names upload directories that are not a job yet.
const incomingPrefix = ".incoming-"

var submissionIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// validateSubmission checks everything about a submission that can be
// checked before a byte is stored.
func (s *Server) validateSubmission(sub *protocol.Submit) (total int64, err error) {
	if sub.SubmissionID != "" && !submissionIDRE.MatchString(sub.SubmissionID) {
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
	seen := make(map[string]string, n)
	for _, f := range sub.Files {
		if err := protocol.ValidateFileName(f.Name); err != nil {
			return 0, protocol.Errorf(protocol.CodeInvalidName, "%v", err)
		}
		if other, dup := seen[protocol.FoldName(f.Name)]; dup {
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
// disk with its hash checked, then commit the job.
func (s *Server) receiveSubmission(ctx context.Context, c *secure.Conn, sub *protocol.Submit, log *slog.Logger) error {
	total, err := s.validateSubmission(sub)
	if err != nil {
		return err
	}
	if sub.SubmissionID != "" {
		j, err := s.store.GetBySubmission(ctx, sub.SubmissionID)
		if err == nil {
			info, err := s.job(ctx, j.ID)
			if err != nil {
				return err
			}
			log.Info("submission already known", "job_id", j.ID, "submission_id", sub.SubmissionID)
			return protocol.WriteMessage(c, protocol.TypeSubmitReady, protocol.SubmitReady{Existing: true, Job: info})
		}
		if !errors.Is(err, jobs.ErrNotFound) {
			return internalError(err)
		}
	}
	queued, err := s.store.QueuedCount(ctx)
	if err != nil {
		return internalError(err)
	}
	avail, err := freeBytes(s.cfg.InputBaseDir)
	if err != nil {
		return internalError(err)
	}
	switch s.uploads.reserve(avail, s.cfg.MinFreeDiskBytes, total, queued, s.cfg.MaxQueuedJobs) {
	case errQueueFull:
		return protocol.Errorf(protocol.CodeQueueFull, "the queue is full (MAX_QUEUED_JOBS = %d); try again later", s.cfg.MaxQueuedJobs)
	case errNoSpace:
		return protocol.Errorf(protocol.CodeNoSpace, "not enough disk space on the server for %d bytes (keeping %d MB free, MIN_FREE_DISK_MB); try again later", total, s.cfg.MinFreeDiskBytes>>20)
	}
	defer s.uploads.release(total)

	id := jobs.NewID()
	incoming := filepath.Join(s.cfg.InputBaseDir, incomingPrefix+id)
	if err := os.Mkdir(incoming, 0o700); err != nil {
		return internalError(fmt.Errorf("create upload dir: %w", err))
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(incoming)
		}
	}()
	if err := protocol.WriteMessage(c, protocol.TypeSubmitReady, protocol.SubmitReady{}); err != nil {
		return err
	}
	log = log.With("job_id", id)
	start := time.Now()
	files, err := receiveFiles(c, incoming, sub.Files, s.opts.IdleTimeout)
	if err != nil {
		log.Warn("upload failed", "err", err)
		s.armWrite(c) // for the error reply
		return &fatalErr{err}
	}
	if err := syncDir(incoming); err != nil {
		return internalError(err)
	}
	if err := os.Rename(incoming, s.inputDir(id)); err != nil {
		return internalError(fmt.Errorf("commit upload dir: %w", err))
	}
	if err := syncDir(s.cfg.InputBaseDir); err != nil {
		os.RemoveAll(s.inputDir(id))
		return internalError(err)
	}
	j, created, err := s.store.Create(ctx, &jobs.Job{
		ID:           id,
		SubmissionID: sub.SubmissionID,
		State:        jobs.Queued,
		Files:        files,
		Options:      sub.Options,
		ClientAddr:   c.RemoteAddr().String(),
		SubmittedAt:  time.Now(),
	})
	if err != nil {
		os.RemoveAll(s.inputDir(id))
		return internalError(fmt.Errorf("commit job: %w", err))
	}
	committed = true
	if !created {
		// A retry of the same submission won the race: keep that one.
		os.RemoveAll(s.inputDir(id))
	} else {
		s.metrics.bytesIn.Add(float64(total))
		log.Info("job queued", "files", len(files), "bytes", total,
			"seconds", time.Since(start).Seconds(), "submission_id", sub.SubmissionID)
		s.changed.JobChanged(id, false)
	}
	// The answer describes the job as it was committed: queued, with its
	// position then (a worker may have claimed it since).
	info := jobInfo(j)
	if j.State == jobs.Queued {
		if pos, err := s.store.QueuePosition(ctx, j.ID); err == nil {
			info.Position = pos
		}
	}
	s.armWrite(c)
	return protocol.WriteMessage(c, protocol.TypeJob, info)
}

// receiveFiles reads each announced file's bytes and its FileDone, writes
// it under dir, checks its size and hash and fsyncs it. The client must
// keep up MinTransferRate, with grace to start and to pause. Any error
// leaves the caller to remove dir.
func receiveFiles(c *secure.Conn, dir string, announced []protocol.FileInfo, grace time.Duration) ([]jobs.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, internalError(err)
	}
	defer root.Close()
	pace := newPacer(grace)
	src := &pacedReader{c: c, p: pace}
	defer c.SetReadDeadline(time.Time{})
	files := make([]jobs.File, 0, len(announced))
	for i, fi := range announced {
		part := fmt.Sprintf(".part-%d", i)
		f, err := root.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, diskError(err)
		}
		h := sha256.New()
		if _, err := xfer.Copy(&diskWriter{xfer.NewSyncingWriter(f)}, src, fi.Size, h); err != nil {
			f.Close()
			return nil, uploadError(fi.Name, err)
		}
		m, err := protocol.ReadMessage(src)
		if err != nil {
			f.Close()
			if pe := messageError(err); pe != nil {
				return nil, pe
			}
			return nil, uploadError(fi.Name, err)
		}
		var done protocol.FileDone
		if err := m.Decode(protocol.TypeFileDone, &done); err != nil {
			f.Close()
			return nil, badRequest(fmt.Errorf("file %q: %w", fi.Name, err))
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if done.SHA256 != sum {
			f.Close()
			return nil, protocol.Errorf(protocol.CodeHashMismatch, "file %q: SHA-256 mismatch: the server received different bytes than the client read", fi.Name)
		}
		if err := xfer.Sync(f); err != nil {
			f.Close()
			return nil, diskError(err)
		}
		if err := f.Close(); err != nil {
			return nil, diskError(err)
		}
		if err := root.Rename(part, fi.Name); err != nil {
			return nil, diskError(err)
		}
		files = append(files, jobs.File{Name: fi.Name, Size: fi.Size, SHA256: sum})
	}
	return files, nil
}

// diskWriter marks the errors of writing an upload to disk, so they are
// told apart from the network's.
type diskWriter struct{ w io.Writer }

type diskErr struct{ err error }

func (e *diskErr) Error() string { return e.err.Error() }
func (e *diskErr) Unwrap() error { return e.err }

func (d *diskWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
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
	return internalError(err)
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
