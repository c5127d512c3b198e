package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// dialAdmin opens a session on the server's admin listener.
func dialAdmin(ctx context.Context, e *env, opts string) (*rpc.Client, error) {
	cfg, err := loadConfig(e, opts, config.LoadAdmin, needAdmin, nil)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, client.DefaultDialTimeout)
	defer cancel()
	a, err := rpc.Dial(dctx, cfg.Addr(), secure.Config{Key: cfg.SharedKey, Role: secure.RoleAdmin})
	if err != nil {
		return nil, fmt.Errorf("connect to the admin port %s: %w", cfg.Addr(), err)
	}
	return a, nil
}

func newAdminCmd(e *env) *cobra.Command {
	var (
		opts   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Watch and steer a running server (admin port and key)",
		Long: `Administer a running server through its admin listener
(SERVER_ADMIN_HOSTNAME:SERVER_ADMIN_PORT, key SERVER_ADMIN_SHARED_KEY, read from
--opts). Output is a table or summary; --json prints one JSON document.`,
	}
	cmd.PersistentFlags().StringVar(&opts, "opts", "recon.opts", "config `file` with SERVER_ADMIN_HOSTNAME, SERVER_ADMIN_PORT and SERVER_ADMIN_SHARED_KEY")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print one JSON document instead of text")

	// run wraps a subcommand body with the admin session.
	run := func(f func(ctx context.Context, a *rpc.Client, args []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			a, err := dialAdmin(ctx, e, opts)
			if err != nil {
				return err
			}
			defer a.Close()
			return f(ctx, a, args)
		}
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Version, uptime, jobs, workers, resources, disks and settings",
		Args:  argsRange(0, 0),
		RunE: run(func(ctx context.Context, a *rpc.Client, _ []string) error {
			return runAdminStatus(ctx, a, printer{e.stdout, asJSON})
		}),
	}

	queue := &cobra.Command{
		Use:   "queue",
		Short: "Every unfinished job and those finished in the last 24 hours",
		Args:  argsRange(0, 0),
		RunE: run(func(ctx context.Context, a *rpc.Client, _ []string) error {
			return runAdminQueue(ctx, a, printer{e.stdout, asJSON})
		}),
	}

	workers := &cobra.Command{
		Use:   "workers",
		Short: "Each worker's state and job, and whether the pool is paused",
		Args:  argsRange(0, 0),
		RunE: run(func(ctx context.Context, a *rpc.Client, _ []string) error {
			return runAdminWorkers(ctx, a, printer{e.stdout, asJSON})
		}),
	}

	var lo adminLogsOptions
	logs := &cobra.Command{
		Use:   "logs [--lines N] [--jobid ID]",
		Short: "The last JSON log records, one per line as stored",
		Args:  argsRange(0, 0),
		PreRunE: func(*cobra.Command, []string) error {
			if lo.lines < 1 || lo.lines > protocol.MaxLogLines {
				return &usageError{fmt.Errorf("--lines takes a number from 1 to %d", protocol.MaxLogLines)}
			}
			return nil
		},
		RunE: run(func(ctx context.Context, a *rpc.Client, _ []string) error {
			return runAdminLogs(ctx, a, &lo, printer{e.stdout, asJSON})
		}),
	}
	logs.Flags().IntVar(&lo.lines, "lines", protocol.DefaultLogLines, "how many records, counted from the newest")
	logs.Flags().StringVar(&lo.jobID, "jobid", "", "only the records of this job `ID`")

	cancel := &cobra.Command{
		Use:   "cancel JOB_ID",
		Short: "Cancel a queued or running job",
		Long: `Cancel a job. A queued job is cancelled at once; a running one has its script's
whole process group sent SIGTERM, then SIGKILL after KILL_GRACE_SECONDS, and
its directories removed. A client waiting on the job sees it cancelled.`,
		Args:              argsRange(1, 1),
		ValidArgsFunction: completeAdminJobIDs(e, &opts),
		RunE: run(func(ctx context.Context, a *rpc.Client, args []string) error {
			return runAdminCancel(ctx, a, args[0], printer{e.stdout, asJSON})
		}),
	}

	setmax := &cobra.Command{
		Use:   "setmaxjobs N",
		Short: "Change how many jobs run at once (1–1024), until restart",
		Long: `Change the number of workers at once: new workers start immediately, surplus
workers stop after their current job. The change lasts until the server restarts;
edit MAX_CONCURRENT_JOBS in the config file to keep it.`,
		Args: argsRange(1, 1),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if n, err := strconv.Atoi(args[0]); err != nil || n < 1 || n > protocol.MaxWorkers {
				return &usageError{fmt.Errorf("setmaxjobs takes a number from 1 to %d, not %q", protocol.MaxWorkers, args[0])}
			}
			return nil
		},
		RunE: run(func(ctx context.Context, a *rpc.Client, args []string) error {
			n, _ := strconv.Atoi(args[0])
			return runAdminSetMaxJobs(ctx, a, n, printer{e.stdout, asJSON})
		}),
	}
	cmd.AddCommand(status, queue, workers, logs, cancel, setmax, newAuditCmd(e), newRedeliverCmd(e), newAdminReloadCmd(e, &opts, &asJSON))
	return cmd
}

// runAdminStatus shows the server's status for its administrators.
func runAdminStatus(ctx context.Context, a *rpc.Client, p printer) error {
	var st protocol.AdminStatus
	if err := a.Call(ctx, protocol.TypeAdminStatus, protocol.Empty{}, protocol.TypeAdminStatusReply, &st); err != nil {
		return err
	}
	return p.print(st, func(w io.Writer) { printAdminStatus(w, &st) })
}

// runAdminQueue lists every unfinished job and those finished lately.
func runAdminQueue(ctx context.Context, a *rpc.Client, p printer) error {
	var q protocol.QueueReply
	if err := a.Call(ctx, protocol.TypeAdminQueue, protocol.Empty{}, protocol.TypeAdminQueueReply, &q); err != nil {
		return err
	}
	return p.print(q, func(w io.Writer) { printAdminQueue(w, q.Jobs) })
}

func printAdminQueue(w io.Writer, jobs []protocol.JobInfo) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs")
		return
	}
	var rows [][]string
	for _, j := range jobs {
		pos, started := "", ""
		if j.Position > 0 {
			pos = strconv.Itoa(j.Position)
		}
		if j.StartedAt != nil {
			started = j.StartedAt.Local().Format(time.DateTime)
		}
		var bytes int64
		for _, f := range j.Files {
			bytes += f.Size
		}
		rows = append(rows, []string{j.JobID, string(j.State), pos, j.SubmittedAt.Local().Format(time.DateTime), started,
			strconv.Itoa(len(j.Files)), humanBytes(bytes), strconv.Itoa(j.Attempts), j.Identity, j.ClientAddr})
	}
	table(w, []string{"JOB ID", "STATE", "POS", "SUBMITTED", "STARTED", "FILES", "SIZE", "ATTEMPTS", "IDENTITY", "CLIENT"}, rows)
	pendingDeliveries(w, jobs)
}

// runAdminWorkers shows each worker and whether the pool is paused.
func runAdminWorkers(ctx context.Context, a *rpc.Client, p printer) error {
	var ws protocol.WorkersReply
	if err := a.Call(ctx, protocol.TypeAdminWorkers, protocol.Empty{}, protocol.TypeAdminWorkersReply, &ws); err != nil {
		return err
	}
	return p.print(ws, func(w io.Writer) { printWorkers(w, &ws) })
}

// adminLogsOptions are the options of recon admin logs.
type adminLogsOptions struct {
	lines int
	jobID string
}

// runAdminLogs prints the last log records, as stored (one JSON object a
// line), or as one JSON document {"records": [...]}.
func runAdminLogs(ctx context.Context, a *rpc.Client, o *adminLogsOptions, p printer) error {
	var records []string
	var r protocol.LogsReply
	err := a.Stream(ctx, protocol.TypeAdminLogs, protocol.LogsRequest{Lines: o.lines, JobID: o.jobID}, protocol.TypeAdminLogsReply, &r, func() bool {
		records = append(records, r.Records...)
		done := r.Done
		r = protocol.LogsReply{}
		return !done
	})
	if err != nil {
		return err
	}
	return p.print(map[string]any{"records": rawRecords(records)}, func(w io.Writer) {
		for _, r := range records {
			fmt.Fprintln(w, r)
		}
	})
}

// runAdminCancel cancels job id.
func runAdminCancel(ctx context.Context, a *rpc.Client, id string, p printer) error {
	var r protocol.CancelReply
	if err := a.Call(ctx, protocol.TypeAdminCancel, protocol.JobRef{JobID: id}, protocol.TypeAdminCancelReply, &r); err != nil {
		return err
	}
	return p.print(r, func(w io.Writer) { fmt.Fprintf(w, "job %s: %s → %s\n", r.JobID, r.PreviousState, r.State) })
}

// runAdminSetMaxJobs sets the number of workers until the server restarts.
func runAdminSetMaxJobs(ctx context.Context, a *rpc.Client, n int, p printer) error {
	var r protocol.SetMaxJobsReply
	if err := a.Call(ctx, protocol.TypeAdminSetMaxJobs, protocol.SetMaxJobs{N: n}, protocol.TypeAdminSetMaxJobsRep, &r); err != nil {
		return err
	}
	return p.print(r, func(w io.Writer) {
		fmt.Fprintf(w, "max concurrent jobs: %d → %d\nnote: %s\n", r.Previous, r.MaxJobs, r.Note)
	})
}

// rawRecords keeps log records as the JSON they are in the --json output.
func rawRecords(rs []string) []any {
	out := make([]any, 0, len(rs))
	for _, r := range rs {
		out = append(out, rawJSON(r))
	}
	return out
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) {
	if !jsonValid([]byte(r)) {
		return []byte(strconv.Quote(string(r))), nil
	}
	return []byte(r), nil
}

func printWorkers(w io.Writer, ws *protocol.WorkersReply) {
	state := "running"
	if ws.Paused {
		state = "paused: " + ws.PauseReason
	}
	fmt.Fprintf(w, "max jobs  %d\npool      %s\n\n", ws.MaxJobs, state)
	var rows [][]string
	cluster := false
	for _, x := range ws.Workers {
		cluster = cluster || x.ClusterJobID != ""
	}
	for _, x := range ws.Workers {
		row := []string{strconv.Itoa(x.ID), string(x.State), x.JobID, x.Identity, x.Since.Local().Format(time.DateTime)}
		if cluster {
			row = append(row, x.ClusterJobID, x.ClusterState)
		}
		rows = append(rows, row)
	}
	head := []string{"WORKER", "STATE", "JOB ID", "IDENTITY", "SINCE"}
	if cluster {
		head = append(head, "SLURM JOB", "SLURM STATE")
	}
	table(w, head, rows)
}

func printAdminStatus(w io.Writer, st *protocol.AdminStatus) {
	fmt.Fprintf(w, "server version  %s\n", st.Version)
	fmt.Fprintf(w, "uptime          %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(w, "jobs            %s\n", countsLine(st.Jobs))
	busy, idle, paused := 0, 0, 0
	for _, x := range st.Workers.Workers {
		switch x.State {
		case protocol.WorkerBusy, protocol.WorkerStopping:
			busy++
		case protocol.WorkerPaused:
			paused++
		default:
			idle++
		}
	}
	fmt.Fprintf(w, "workers         %d max: %d busy, %d idle, %d paused\n", st.Workers.MaxJobs, busy, idle, paused)
	if st.Workers.Paused {
		fmt.Fprintf(w, "paused          %s\n", st.Workers.PauseReason)
	}
	if st.Executor != "" && st.Executor != "local" {
		fmt.Fprintf(w, "executor        %s: %s\n", st.Executor, st.ExecutorCheck)
	}
	r := st.Resources
	if r.Error != "" {
		fmt.Fprintf(w, "resources       unreadable: %s\n", r.Error)
	} else {
		fmt.Fprintf(w, "cpu             %.0f%% (pause above %d%%)\n", r.CPUPercent, r.MaxCPUPercent)
		fmt.Fprintf(w, "memory          %d MB available (pause below %d MB)\n", r.AvailableMemoryMB, r.MinAvailableMemoryMB)
	}
	for _, d := range st.Disks {
		free := "unknown"
		if d.FreeBytes >= 0 {
			free = humanBytes(d.FreeBytes) + " free"
		}
		fmt.Fprintf(w, "disk            %s (%s): %s\n", d.Path, d.Key, free)
	}
	if n := len(st.KeptUploads); n > 0 {
		var kept, total int64
		waiting := 0
		for _, k := range st.KeptUploads {
			kept += k.BytesKept
			total += k.Bytes
			if k.State == protocol.UploadWaiting {
				waiting++
			}
		}
		fmt.Fprintf(w, "uploads         %d resumable (%d broken, waiting for their clients): %s of %s received\n",
			n, waiting, humanBytes(kept), humanBytes(total))
	}
	printSpace(w, &st.Space)
	keys := make([]string, 0, len(st.Config))
	for k := range st.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "settings")
	for _, k := range keys {
		v := st.Config[k]
		// setmaxjobs changes the maximum until the server restarts: say
		// so beside the value in the config file.
		if k == "MAX_CONCURRENT_JOBS" && v != strconv.Itoa(st.Workers.MaxJobs) {
			v = fmt.Sprintf("%s (now %d, set by setmaxjobs until restart)", v, st.Workers.MaxJobs)
		}
		fmt.Fprintf(w, "  %-32s %s\n", k, v)
	}
}

func jsonValid(b []byte) bool { return json.Valid(b) }

// printSpace shows how the disk space is held for clients.
func printSpace(w io.Writer, sp *protocol.SpaceUse) {
	fmt.Fprintf(w, "space held      uploads in progress: %d, %s reserved (%s received); at most %s per client\n",
		sp.Uploads, humanBytes(sp.ReservedBytes), humanBytes(sp.ReceivedBytes), humanBytes(sp.MaxReservedBytesPerClient))
	fmt.Fprintf(w, "                kept uploads: %d, %s; at most %s per client, %s in all\n",
		sp.KeptUploads, humanBytes(sp.KeptUploadBytes), humanBytes(sp.MaxKeptUploadBytesPerClient), humanBytes(sp.MaxKeptUploadBytes))
	if sp.Results < 0 {
		fmt.Fprintln(w, "                results waiting: unknown")
		return
	}
	kept := "removed when a job fails"
	if sp.KeepFailedOutputs {
		kept = "kept: KEEP_FAILED_OUTPUTS"
	}
	fmt.Fprintf(w, "                results waiting: %d, %s; of failed jobs: %d, %s (%s)\n",
		sp.Results, humanBytes(sp.ResultBytes), sp.FailedOutputs, humanBytes(sp.FailedOutputBytes), kept)
}
