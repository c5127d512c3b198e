package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// cancelWait bounds how long an admin cancel waits for a running script to
// end before it answers.
const cancelWait = time.Minute

// serveAdmin answers an administrator's requests in sequence.
func (s *Server) serveAdmin(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	if !s.auditSession(ctx, c, "admin", adminIdentity) {
		return
	}
	s.adminMux.Serve(ctx, c, log, &sessionState{})
}

// adminRequests is the table of an administrator session's requests.
func (s *Server) adminRequests() *rpc.Mux[*sessionState] {
	m := s.newMux()
	m.Unknown = "admin request"
	m.Check = s.auditAdminRequest // every admin request is audited before it runs
	rpc.Handle(m, protocol.TypeAdminAudit, s.sendAudit)
	rpc.Reply(m, protocol.TypeStatus, protocol.TypeStatusReply, func(ctx context.Context, _ *session, _ *protocol.Empty) (*protocol.StatusReply, error) {
		return s.status(ctx)
	})
	rpc.Reply(m, protocol.TypeAdminStatus, protocol.TypeAdminStatusReply, func(ctx context.Context, _ *session, _ *protocol.Empty) (*protocol.AdminStatus, error) {
		return s.adminStatus(ctx)
	})
	rpc.Reply(m, protocol.TypeAdminQueue, protocol.TypeAdminQueueReply, func(ctx context.Context, _ *session, _ *protocol.Empty) (*protocol.QueueReply, error) {
		q, err := s.queue(ctx, "", "", time.Now().Add(-24*time.Hour))
		if err == nil {
			s.addPendingDeliveries(ctx, q)
		}
		return q, err
	})
	rpc.Reply(m, protocol.TypeAdminWorkers, protocol.TypeAdminWorkersReply, func(ctx context.Context, _ *session, _ *protocol.Empty) (protocol.WorkersReply, error) {
		return s.pool.snapshot(), nil
	})
	rpc.Handle(m, protocol.TypeAdminLogs, func(ctx context.Context, ss *session, req *protocol.LogsRequest) error {
		return s.sendLogs(ss.Conn, *req)
	})
	rpc.Reply(m, protocol.TypeAdminCancel, protocol.TypeAdminCancelReply, func(ctx context.Context, ss *session, ref *protocol.JobRef) (*protocol.CancelReply, error) {
		rep, err := s.cancel(ctx, "", ref.JobID)
		if err == nil {
			ss.Log.Info("job cancelled by an administrator", "job_id", ref.JobID, "previous_state", rep.PreviousState)
		}
		return rep, err // the reply's write deadline is armed after the wait for the script
	})
	rpc.Reply(m, protocol.TypeAdminRedeliver, protocol.TypeAdminRedeliverReply, s.adminRedeliver)
	rpc.Reply(m, protocol.TypeAdminReload, protocol.TypeAdminReloadReply, func(ctx context.Context, ss *session, _ *protocol.Empty) (*protocol.ReloadReply, error) {
		return s.ReloadClientKeys()
	})
	rpc.Reply(m, protocol.TypeAdminSetMaxJobs, protocol.TypeAdminSetMaxJobsRep, func(ctx context.Context, ss *session, req *protocol.SetMaxJobs) (protocol.SetMaxJobsReply, error) {
		if req.N < 1 || req.N > protocol.MaxWorkers {
			return protocol.SetMaxJobsReply{}, protocol.Errorf(protocol.CodeBadRequest, "setmaxjobs takes a number from 1 to %d, not %d", protocol.MaxWorkers, req.N)
		}
		prev := s.pool.resize(req.N)
		ss.Log.Info("maximum concurrent jobs changed", "previous", prev, "max_jobs", req.N)
		s.changed.Broadcast()
		return protocol.SetMaxJobsReply{
			Previous: prev, MaxJobs: req.N,
			Note: "the change lasts until the server restarts; edit MAX_CONCURRENT_JOBS in the config file to keep it",
		}, nil
	})
	return m
}

func (s *Server) adminStatus(ctx context.Context) (*protocol.AdminStatus, error) {
	st, err := s.status(ctx)
	if err != nil {
		return nil, err
	}
	out := &protocol.AdminStatus{
		StatusReply: *st,
		Workers:     s.pool.snapshot(),
		Resources:   s.pool.gate.resources(ctx),
	}
	for _, d := range []struct{ key, dir string }{
		{"RECON_SERVER_BASE_PFILE_DIR", s.cfg.InputBaseDir},
		{"RECON_JOB_OUTPUT_BASE_DIR", s.cfg.OutputBaseDir},
		{"RECON_SERVER_STATE_DIR", s.cfg.StateDir},
	} {
		free, err := freeBytes(d.dir)
		if err != nil {
			free = -1
		}
		out.Disks = append(out.Disks, protocol.DiskInfo{Key: d.key, Path: d.dir, FreeBytes: free})
	}
	c := s.cfg
	out.Config = map[string]string{
		"config_file":                     c.Path,
		"SERVER_HOSTNAME":                 c.Hostname,
		"SERVER_PORT":                     strconv.Itoa(c.Port),
		"SERVER_ADMIN_HOSTNAME":           c.AdminHostname,
		"SERVER_ADMIN_PORT":               strconv.Itoa(c.AdminPort),
		"TRUSTED_IPS":                     c.TrustedIPs.String(),
		"RECON_SCRIPT_PATH":               c.ScriptPath,
		"LOG_FILEPATH":                    c.LogFile,
		"LOG_LEVEL":                       c.LogLevel.String(),
		"AUDIT_LOG_FILEPATH":              c.AuditLogPath(),
		"MAX_CONCURRENT_JOBS":             strconv.Itoa(c.MaxConcurrentJobs),
		"MAX_QUEUED_JOBS":                 strconv.Itoa(c.MaxQueuedJobs),
		"MAX_FILES_PER_JOB":               strconv.Itoa(c.MaxFilesPerJob),
		"MAX_JOB_INPUT_BYTES":             strconv.FormatInt(c.MaxJobInputBytes, 10),
		"MIN_FREE_DISK_MB":                strconv.FormatInt(c.MinFreeDiskBytes>>20, 10),
		"MAX_JOB_ATTEMPTS":                strconv.Itoa(c.MaxJobAttempts),
		"JOB_TIMEOUT_SECONDS":             strconv.FormatFloat(c.JobTimeout.Seconds(), 'f', -1, 64),
		"KILL_GRACE_SECONDS":              strconv.FormatFloat(c.KillGrace.Seconds(), 'f', -1, 64),
		"RESULT_RETENTION_HOURS":          strconv.FormatFloat(c.ResultRetention.Hours(), 'f', -1, 64),
		"MAX_CPU_LOAD_PERCENT":            strconv.Itoa(c.MaxCPULoadPercent),
		"MIN_AVAILABLE_MEMORY_MB":         strconv.FormatInt(c.MinAvailableMemoryBytes>>20, 10),
		"RESOURCE_CHECK_INTERVAL_SECONDS": strconv.FormatFloat(c.ResourceCheckInterval.Seconds(), 'f', -1, 64),
		"UPLOAD_RESUME_HOURS":             strconv.FormatFloat(c.UploadResume.Hours(), 'f', -1, 64),
		"KEEP_FAILED_OUTPUTS":             strconv.FormatBool(c.KeepFailedOutputs),
		"IDLE_TIMEOUT_SECONDS":            strconv.FormatFloat(s.opts.IdleTimeout.Seconds(), 'f', -1, 64),
		"MAX_QUEUED_JOBS_PER_CLIENT":      strconv.Itoa(c.MaxQueuedJobsPerClient),
		"client_identities":               strings.Join(s.ids.names(), ","),
	}
	s.pacsConfig(out.Config)
	out.KeptUploads = s.partials.list()
	out.Space = s.spaceUse(ctx)
	s.executorStatus(out)
	return out, nil
}

// cancel cancels a job of owner ("": any job, for admins) and, for a
// running one, waits until its script has ended and the job is recorded
// as cancelled.
func (s *Server) cancel(ctx context.Context, owner, id string) (*protocol.CancelReply, error) {
	if _, _, err := s.lookup(ctx, owner, id); err != nil {
		return nil, err
	}
	wake := s.changed.Wait()
	prev, err := s.pool.cancelJob(ctx, id)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", id)
	case errors.Is(err, jobs.ErrState):
		j, gerr := s.store.Get(ctx, id)
		if gerr == nil {
			return nil, protocol.Errorf(protocol.CodeConflict, "job %s has already ended (%s); only queued or running jobs can be cancelled", id, j.State)
		}
		return nil, protocol.Errorf(protocol.CodeConflict, "job %s cannot be cancelled now", id)
	case err != nil:
		return nil, rpc.Internal(err)
	}
	deadline := time.NewTimer(cancelWait)
	defer deadline.Stop()
	for {
		j, err := s.store.Get(ctx, id)
		if err != nil {
			return nil, rpc.Internal(err)
		}
		if j.State.Terminal() {
			return &protocol.CancelReply{JobID: id, PreviousState: wireState(prev), State: wireState(j.State)}, nil
		}
		select {
		case <-wake:
			wake = s.changed.Wait()
		case <-deadline.C:
			return &protocol.CancelReply{JobID: id, PreviousState: wireState(prev), State: wireState(j.State)}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// sendLogs answers a logs request in messages under the size limit.
func (s *Server) sendLogs(c *secure.Conn, req protocol.LogsRequest) error {
	n := req.Lines
	if n == 0 {
		n = protocol.DefaultLogLines
	}
	if n < 1 || n > protocol.MaxLogLines {
		return protocol.Errorf(protocol.CodeBadRequest, "--lines takes a number from 1 to %d", protocol.MaxLogLines)
	}
	if req.JobID != "" && !jobs.ValidID(req.JobID) {
		return protocol.Errorf(protocol.CodeNotFound, "no job %q", rpc.Truncate(req.JobID, 64))
	}
	if s.cfg.LogFile == "" {
		return protocol.Errorf(protocol.CodeUnavailable, "the server logs to standard error (LOG_FILEPATH is empty); there is no log file to read")
	}
	records, err := tailLog(s.cfg.LogFile, n, req.JobID)
	if err != nil {
		return rpc.Internal(fmt.Errorf("read log: %w", err))
	}
	const budget = protocol.MaxMessageSize / 2
	batch, size := []string{}, 0
	for _, r := range records {
		if size+len(r) > budget && len(batch) > 0 {
			if err := protocol.WriteMessage(c, protocol.TypeAdminLogsReply, protocol.LogsReply{Records: batch}); err != nil {
				return err
			}
			batch, size = []string{}, 0
		}
		batch = append(batch, r)
		size += len(r) + 16
	}
	return protocol.WriteMessage(c, protocol.TypeAdminLogsReply, protocol.LogsReply{Records: batch, Done: true})
}
