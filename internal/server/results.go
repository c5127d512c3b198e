package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/audit"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// sendResults runs the fetch request: announce a finished job's result
// files, stream each, and on the client's acknowledgement remove them.
//
// hash is the session's end-to-end hash: with BLAKE3 the manifest gives
// each result's BLAKE3 (taken when it was collected) beside its SHA-256,
// and the client checks the former.
func (s *Server) sendResults(ctx context.Context, c *secure.Conn, owner, hash, id string, log *slog.Logger) error {
	j, _, err := s.lookup(ctx, owner, id)
	if err != nil {
		return err
	}
	if !j.State.Terminal() {
		return protocol.Errorf(protocol.CodeNotFinished, "job %s is %s; wait for it to finish", id, j.State)
	}
	removed := !j.ResultsRemovedAt.IsZero()
	if removed && j.State == jobs.Failed {
		if len(j.Results) == 0 {
			return protocol.Errorf(protocol.CodeGone, "job %s failed and has no results: a failed job's outputs are removed when it fails (unless the server sets KEEP_FAILED_OUTPUTS = true)", id)
		}
		return protocol.Errorf(protocol.CodeGone, "the outputs of failed job %s were already delivered, have expired, or were removed to make room for new submissions", id)
	}
	if removed {
		return protocol.Errorf(protocol.CodeGone, "the results of job %s were already delivered or have expired", id)
	}
	if _, err := os.Lstat(s.outputDir(id)); errors.Is(err, os.ErrNotExist) {
		// Removed, and not recorded yet (the job has just ended without
		// results), or removed by hand.
		return protocol.Errorf(protocol.CodeGone, "the results of job %s are no longer on the server", id)
	}
	log = log.With("job_id", id)
	files := j.Results
	var root *os.Root
	if len(files) > 0 {
		root, err = os.OpenRoot(s.outputDir(id))
		if err != nil {
			return rpc.Internal(fmt.Errorf("open results: %w", err))
		}
		defer root.Close()
	}
	// A result removed or cut short since it was collected is a clear
	// error now; once the manifest is sent, it could only break the stream.
	for _, f := range files {
		fi, err := root.Lstat(f.Name)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < f.Size {
			log.Error("result changed after it was collected", "file", f.Name, "err", err)
			return protocol.Errorf(protocol.CodeGone, "result %q of job %s is no longer on the server as it was collected", f.Name, id)
		}
	}
	withBLAKE3 := hash == protocol.HashBLAKE3
	manifest := manifestFiles(files, withBLAKE3)
	if manifest == nil {
		manifest = []protocol.FileSum{}
	}
	if err := s.record(ctx, audit.Record{Kind: audit.KindFetch, Identity: owner, Peer: c.RemoteAddr().String(),
		JobID: id, Files: auditFiles(files, withBLAKE3)}); err != nil {
		return err
	}
	if err := protocol.WriteMessage(c, protocol.TypeResults, protocol.Results{Job: *viewFor(jobInfo(j), j, hash), Files: manifest}); err != nil {
		return err
	}
	start := time.Now()
	var total int64
	// The client must take the files at MinTransferRate: one that stops
	// reading does not hold the session for ever.
	dst := &pacedWriter{c: c, p: newPacer(s.opts.IdleTimeout)}
	for _, f := range files {
		if err := sendFile(dst, root, f); err != nil {
			// The stream is out of step: the client sees the connection
			// end before the file does, and reports it.
			log.Error("sending result failed", "file", f.Name, "err", err)
			return rpc.ErrSessionOver
		}
		total += f.Size
	}
	m, err := s.msgs.ReadMessage(ctx, c)
	if err != nil {
		return err
	}
	var ack protocol.JobRef
	if err := m.Decode(protocol.TypeAck, &ack); err != nil {
		return rpc.BadRequest(err)
	}
	if ack.JobID != id {
		return rpc.BadRequest(fmt.Errorf("acknowledgement for job %q while fetching %q", ack.JobID, id))
	}
	// The results are deleted only once the confirmation is audited.
	if err := s.record(ctx, audit.Record{Kind: audit.KindFetchConfirmed, Identity: owner, Peer: c.RemoteAddr().String(),
		JobID: id, Files: verifiedFiles(manifest)}); err != nil {
		return err
	}
	if err := s.store.MarkDelivered(ctx, id); err != nil {
		return rpc.Internal(err)
	}
	s.metrics.bytesOut.Add(float64(total))
	log.Info("results delivered", "files", len(files), "bytes", total, "seconds", time.Since(start).Seconds())
	if s.pacs.holds(ctx, id) {
		// Kept until the PACS delivery ends (pacs.go removes them then).
		s.armWrite(c)
		err = protocol.WriteMessage(c, protocol.TypeAckDone, protocol.JobRef{JobID: id})
		s.changed.JobChanged(id, false)
		return err
	}
	// Move the results out of the way and answer before removing them:
	// deleting a gigabyte takes 0.2 s on tmpfs and most of a second on
	// ext4, which the client need not wait for. A crash in between leaves
	// the renamed directory to the sweep of the next start.
	gone := filepath.Join(s.cfg.OutputBaseDir, deliveredPrefix+id)
	renamed := os.Rename(s.outputDir(id), gone) == nil
	s.armWrite(c)
	err = protocol.WriteMessage(c, protocol.TypeAckDone, protocol.JobRef{JobID: id})
	if renamed {
		if rerr := os.RemoveAll(gone); rerr != nil {
			s.log.Warn("remove results", "job_id", id, "err", rerr)
		}
	}
	s.removeOutput(ctx, id)
	s.changed.JobChanged(id, false)
	return err
}

// deliveredPrefix names output directories whose results were delivered
// and are being removed.
const deliveredPrefix = ".delivered-"

// sendFile streams exactly f.Size bytes of the result file. The file is
// opened through the output dir's root without following links, and must
// still be a regular file at least the size that was hashed: a file that
// grew (a leftover process still appending) is sent as it was collected,
// and the client's hash check catches one changed in place.
func sendFile(w *pacedWriter, root *os.Root, f jobs.File) error {
	fh, err := root.OpenFile(f.Name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() < f.Size {
		return fmt.Errorf("result %q changed after it was collected", f.Name)
	}
	// The server does not hash the file again: the client checks it
	// against the SHA-256 taken when it was collected.
	if _, err := w.SendFrom(fh, f.Size); err != nil {
		return fmt.Errorf("result %q: %w", f.Name, err)
	}
	return nil
}

func (s *Server) removeOutput(ctx context.Context, id string) {
	if err := os.RemoveAll(s.outputDir(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove results", "job_id", id, "err", err)
		return
	}
	if err := s.store.MarkResultsRemoved(ctx, id); err != nil {
		s.log.Warn("record results removed", "job_id", id, "err", err)
	}
}

// sweepResults removes results nobody fetched within RESULT_RETENTION_HOURS.
func (s *Server) sweepResults(ctx context.Context) {
	interval := min(s.cfg.ResultRetention/10, time.Hour)
	interval = max(interval, time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		expired, err := s.store.ResultsToExpire(ctx, time.Now().Add(-s.cfg.ResultRetention))
		if err != nil && ctx.Err() == nil {
			s.log.Warn("list expired results", "err", err)
		}
		for _, j := range expired {
			if s.pacs.holds(ctx, j.ID) {
				continue // removed when its PACS delivery ends
			}
			s.log.Info("results expired unfetched", "job_id", j.ID, "identity", j.Identity)
			s.removeOutput(ctx, j.ID)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
