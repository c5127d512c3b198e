package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/recon-mri/recon/internal/audit"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// adminIdentity is the identity of an administrator's session (the holder
// of SERVER_ADMIN_SHARED_KEY).
const adminIdentity = "admin"

// auditHeadFile is the file, in RECON_SERVER_STATE_DIR, that keeps the
// audit chain's head.
const auditHeadFile = "audit.db"

// errAudit is what a peer hears when its request cannot be audited: the
// request is refused rather than carried out unaudited.
var errAudit = protocol.Errorf(protocol.CodeUnavailable,
	"the server cannot write its audit trail, so it refuses the request; an administrator must look at the server log")

// openAudit opens the audit trail (AUDIT_LOG_FILEPATH) with its head in
// the state directory.
func (s *Server) openAudit(ctx context.Context) error {
	l, err := audit.Open(ctx, s.cfg.AuditLogPath(), filepath.Join(s.cfg.StateDir, auditHeadFile), s.log,
		audit.Options{RotateBytes: s.opts.AuditRotateBytes})
	if err != nil {
		return fmt.Errorf("AUDIT_LOG_FILEPATH: %w", err)
	}
	s.auditLog = l
	s.authFailures = audit.NewFailures(nil)
	return nil
}

// record writes r to the audit trail before the action it describes is
// carried out or acknowledged. An error is errAudit, for the peer; the
// cause is logged.
func (s *Server) record(ctx context.Context, r audit.Record) error {
	if err := s.auditLog.Append(ctx, r); err != nil {
		s.log.Error("audit record not written; the request is refused", "kind", string(r.Kind), "job_id", r.JobID, "err", err)
		return errAudit
	}
	return nil
}

// recordCancel records the cancellation of job id by the client session
// on c (its owner), before the job is cancelled; an error refuses it.
func (s *Server) recordCancel(ctx context.Context, c *secure.Conn, identity, id string) error {
	return s.record(ctx, audit.Record{Kind: audit.KindCancel, Identity: identity, Peer: c.RemoteAddr().String(), JobID: id})
}

// recordKeysReload records a reload of the client keys: the identities
// added, removed and given new keys (names only, never a key), or why the
// reload failed (loadErr; the previous keys stay in force). A reload whose
// record cannot be written must not take effect.
func (s *Server) recordKeysReload(ctx context.Context, added, removed, changed []string, loadErr error) error {
	r := audit.Record{Kind: audit.KindKeysReload, Identity: adminIdentity, Added: added, Removed: removed, Changed: changed}
	if loadErr != nil {
		r.Error = loadErr.Error()
	}
	return s.record(ctx, r)
}

// auditSession records a session that authenticated; false means it
// could not be recorded: the peer has been told so and the session must
// be closed unserved.
func (s *Server) auditSession(ctx context.Context, c *secure.Conn, role, identity string) bool {
	if s.record(ctx, audit.Record{Kind: audit.KindAuth, Role: role, Identity: identity, Peer: c.RemoteAddr().String()}) == nil {
		return true
	}
	s.armWrite(c)
	protocol.WriteError(c, errAudit) // the answer to its first request
	return false
}

// auditAdminRequest records an administrator's request before its
// handler runs (the admin mux's Check).
func (s *Server) auditAdminRequest(ctx context.Context, ss *session, msg protocol.Message) error {
	body := string(msg.Body)
	if len(body) > audit.MaxRequestBytes {
		body = body[:audit.MaxRequestBytes] + "…"
	}
	if body == "{}" || body == "null" {
		body = ""
	}
	return s.record(ctx, audit.Record{Kind: audit.KindAdmin, Identity: adminIdentity, Peer: ss.Conn.RemoteAddr().String(),
		Command: string(msg.Type), Request: body})
}

// auditFiles is files as the audit trail records them, with their
// digests: both, when withBLAKE3, else the SHA-256 only (and the BLAKE3 of
// a file that has no SHA-256, an input uploaded with BLAKE3).
func auditFiles(files []jobs.File, withBLAKE3 bool) []audit.File {
	out := make([]audit.File, len(files))
	for i, f := range files {
		out[i] = audit.File{Name: f.Name, Size: f.Size, SHA256: f.SHA256}
		if withBLAKE3 || f.SHA256 == "" {
			out[i].BLAKE3 = f.BLAKE3
		}
	}
	return out
}

// verifiedFiles is a fetch's files as its client verified them before it
// acknowledged: each with the one digest it checked, BLAKE3 where the
// manifest gave one, else SHA-256.
func verifiedFiles(manifest []protocol.FileSum) []audit.File {
	out := make([]audit.File, len(manifest))
	for i, f := range manifest {
		out[i] = audit.File{Name: f.Name, Size: f.Size}
		if f.BLAKE3 != "" {
			out[i].BLAKE3 = f.BLAKE3
		} else {
			out[i].SHA256 = f.SHA256
		}
	}
	return out
}

// runAuditSummaries writes the summaries of failed handshakes, at most
// one per peer address per interval.
func (s *Server) runAuditSummaries(ctx context.Context) {
	interval := s.opts.AuditInterval
	if interval <= 0 {
		interval = audit.FailureInterval
	}
	s.authFailures.Run(ctx, s.auditLog, interval, func(err error) {
		s.log.Error("audit summary of failed handshakes not written", "err", err)
	})
}

// sendAudit answers recon admin audit: the records the request selects,
// or the verification of the whole chain.
func (s *Server) sendAudit(ctx context.Context, ss *session, req *protocol.AuditRequest) error {
	if len(req.Identity) > protocol.MaxAuditIdentity {
		return protocol.Errorf(protocol.CodeBadRequest, "identity of %d bytes, at most %d", len(req.Identity), protocol.MaxAuditIdentity)
	}
	if req.JobID != "" && !jobs.ValidID(req.JobID) {
		return protocol.Errorf(protocol.CodeBadRequest, "%q is not a job id", rpc.Truncate(req.JobID, 64))
	}
	if req.Verify {
		rep, err := s.auditLog.Verify(ctx)
		if err != nil {
			return rpc.Internal(fmt.Errorf("verify audit trail: %w", err))
		}
		v := protocol.AuditVerify{OK: rep.OK, Path: s.auditLog.Path(), Files: rep.Files, Records: rep.Records,
			FirstSeq: rep.FirstSeq, LastSeq: rep.LastSeq, HeadSeq: rep.HeadSeq, Note: rep.Note,
			File: rep.File, Line: rep.Line, Reason: rep.Reason}
		ss.ArmWrite()
		return protocol.WriteMessage(ss.Conn, protocol.TypeAdminAuditReply, protocol.AuditReply{Records: []string{}, Verify: &v, Done: true})
	}
	f := audit.Filter{Identity: req.Identity, JobID: req.JobID}
	if req.Since != nil {
		f.Since = *req.Since
	}
	const budget = protocol.MaxMessageSize / 2
	batch, size := []string{}, 0
	err := s.auditLog.Read(ctx, f, func(line []byte) error {
		if size+len(line) > budget && len(batch) > 0 {
			ss.ArmWrite()
			if err := protocol.WriteMessage(ss.Conn, protocol.TypeAdminAuditReply, protocol.AuditReply{Records: batch}); err != nil {
				return &sendError{err}
			}
			batch, size = []string{}, 0
		}
		batch = append(batch, string(line))
		size += len(line) + 16
		return nil
	})
	var se *sendError
	if errors.As(err, &se) {
		return se.err
	}
	if err != nil {
		return rpc.Internal(fmt.Errorf("read audit trail: %w", err))
	}
	ss.ArmWrite()
	return protocol.WriteMessage(ss.Conn, protocol.TypeAdminAuditReply, protocol.AuditReply{Records: batch, Done: true})
}

// sendError is a write to the peer that failed midway through a reply.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
