package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/protocol"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	opts   string
	server string
	json   bool
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.opts, "opts", "recon.opts", "config `file` with SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY")
	cmd.Flags().StringVar(&f.server, "server", "", "server `HOST:PORT`, instead of SERVER_HOSTNAME and SERVER_PORT")
	cmd.Flags().BoolVar(&f.json, "json", false, "print one JSON document instead of text")
}

// dial loads the client config and connects, trying again up to
// reconnects times (0: never) while the server cannot be reached or closes
// the handshake without answering (see client.DialRetrying).
func (f *clientFlags) dial(ctx context.Context, e *env, reconnects int) (*client.Client, *config.Client, error) {
	cfg, err := loadConfig(e, f.opts, config.LoadClient, needClient, nil)
	if err != nil {
		return nil, nil, err
	}
	addr := net.JoinHostPort(cfg.Hostname, strconv.Itoa(cfg.Port))
	if f.server != "" {
		if _, _, err := net.SplitHostPort(f.server); err != nil {
			return nil, nil, &usageError{fmt.Errorf("--server %q: want HOST:PORT", f.server)}
		}
		addr = f.server
	}
	c, err := client.DialRetrying(ctx, client.Config{Address: addr, Key: cfg.SharedKey.Encode()},
		backoff(reconnects, func(retry int, err error, wait time.Duration) {
			fmt.Fprintf(e.stderr, "recon: %v; trying again in %v (attempt %d of %d)\n", err, wait, retry, reconnects)
		}))
	if err != nil {
		return nil, nil, err
	}
	return c, cfg, nil
}

// backoff is the client's Backoff for --reconnects n (0: never).
func backoff(n int, onRetry func(retry int, err error, wait time.Duration)) client.Backoff {
	if n == 0 {
		n = -1 // the client package reads 0 as its default
	}
	return client.Backoff{Retries: n, OnRetry: onRetry}
}

func newStatusCmd(e *env) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "status [JOB_ID]",
		Short: "Show the server's status, or one job's",
		Long: `Without an argument, show the server's status (version, uptime, jobs by state).
With a JOB_ID, show that job; an unknown job exits non-zero. A server that cannot
be reached, or closes the handshake without answering (a wrong key or port, an
address it does not allow, or a busy server), is tried twice more (after 1 s
and 2 s).`,
		Args: argsRange(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, _, err := f.dial(ctx, e, client.AuthRetries)
			if err != nil {
				return err
			}
			defer c.Close()
			if len(args) == 1 {
				j, err := c.Job(ctx, args[0])
				if err != nil {
					return err
				}
				if f.json {
					return printJSON(e.stdout, j)
				}
				printJob(e.stdout, j)
				return nil
			}
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(e.stdout, st)
			}
			fmt.Fprintf(e.stdout, "server version  %s\n", st.Version)
			fmt.Fprintf(e.stdout, "uptime          %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
			fmt.Fprintf(e.stdout, "workers         %d\n", st.MaxWorkers)
			fmt.Fprintf(e.stdout, "jobs            %s\n", countsLine(st.Jobs))
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func countsLine(m map[protocol.JobState]int) string {
	var parts []string
	for _, s := range protocol.JobStates() {
		parts = append(parts, fmt.Sprintf("%s %d", s, m[s]))
	}
	return strings.Join(parts, ", ")
}

func printJob(w io.Writer, j *client.Job) {
	fmt.Fprintf(w, "job        %s\n", j.JobID)
	if j.Backend != "" {
		fmt.Fprintf(w, "backend    %s\n", j.Backend)
	}
	state := string(j.State)
	if j.Position > 0 {
		state += fmt.Sprintf(" (position %d)", j.Position)
	}
	if j.Detail != "" {
		state += " (" + j.Detail + ")"
	}
	fmt.Fprintf(w, "state      %s\n", state)
	fmt.Fprintf(w, "submitted  %s\n", j.SubmittedAt.Local().Format(time.DateTime))
	if j.StartedAt != nil {
		fmt.Fprintf(w, "started    %s\n", j.StartedAt.Local().Format(time.DateTime))
	}
	if j.FinishedAt != nil {
		fmt.Fprintf(w, "finished   %s\n", j.FinishedAt.Local().Format(time.DateTime))
	}
	fmt.Fprintf(w, "attempts   %d\n", j.Attempts)
	if j.ExitCode != nil {
		fmt.Fprintf(w, "exit code  %d\n", *j.ExitCode)
	}
	if j.Error != "" {
		fmt.Fprintf(w, "error      %s\n", j.Error)
	}
	var in int64
	for _, f := range j.Files {
		in += f.Size
	}
	fmt.Fprintf(w, "inputs     %d file(s), %d bytes\n", len(j.Files), in)
	if len(j.Options) > 0 {
		keys := make([]string, 0, len(j.Options))
		for k := range j.Options {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			label := "options   "
			if i > 0 {
				label = "          "
			}
			fmt.Fprintf(w, "%s %s=%q\n", label, k, j.Options[k])
		}
	}
	if len(j.Results) > 0 {
		fmt.Fprintf(w, "results    %d file(s)", len(j.Results))
		switch {
		case j.Delivered:
			fmt.Fprint(w, ", delivered")
		case j.ResultsGone:
			fmt.Fprint(w, ", expired")
		}
		fmt.Fprintln(w)
	}
}

func newQueueCmd(e *env) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "List the jobs on the server",
		Long: `List the jobs that have not finished, in queue order (running first), and those that finished in the last 24 hours.
A server that cannot be reached, or closes the handshake without answering, is
tried twice more (after 1 s and 2 s).`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, _, err := f.dial(ctx, e, client.AuthRetries)
			if err != nil {
				return err
			}
			defer c.Close()
			q, err := c.QueueReport(ctx)
			if err != nil {
				return err
			}
			jobs := q.Jobs
			if f.json {
				return printJSON(e.stdout, q)
			}
			if len(q.Unavailable) > 0 {
				fmt.Fprintf(e.stderr, "recon: backends down, their jobs are not listed: %s\n", strings.Join(q.Unavailable, ", "))
			}
			if len(jobs) == 0 {
				fmt.Fprintln(e.stdout, "no jobs")
				return nil
			}
			// Through a relay, each job says which backend holds it.
			withBackend := false
			for _, j := range jobs {
				withBackend = withBackend || j.Backend != ""
			}
			var rows [][]string
			for _, j := range jobs {
				pos := ""
				if j.Position > 0 {
					pos = strconv.Itoa(j.Position)
				}
				var bytes int64
				for _, f := range j.Files {
					bytes += f.Size
				}
				row := []string{j.JobID, string(j.State), pos, j.SubmittedAt.Local().Format(time.DateTime),
					strconv.Itoa(len(j.Files)), humanBytes(bytes)}
				if withBackend {
					row = append(row, j.Backend)
				}
				rows = append(rows, row)
			}
			header := []string{"JOB ID", "STATE", "POS", "SUBMITTED", "FILES", "SIZE"}
			if withBackend {
				header = append(header, "BACKEND")
			}
			table(e.stdout, header, rows)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// jobFlow is the shared tail of submit and fetch: follow the job, download
// its results, report.
type jobFlow struct {
	e          *env
	c          *client.Client
	json       bool
	output     string // "" → CLIENT_DOWNLOAD_DIR/<job_id>
	cfg        *config.Client
	reconnects int // times to reconnect when the connection breaks
}

// backoff is the Backoff of waiting and downloading: up to fl.reconnects
// retries, each on a new session, when the connection breaks or stalls or
// a relay's backend is down (see client.Retryable). Waiting for a job and
// fetching its results can start over: the job and its results stay on the
// server.
func (fl *jobFlow) backoff(what string) client.Backoff {
	return backoff(fl.reconnects, func(retry int, err error, wait time.Duration) {
		fmt.Fprintf(fl.e.stderr, "recon: %v; reconnecting in %v to %s (attempt %d of %d)\n",
			err, wait, what, retry, fl.reconnects)
	})
}

// result is the JSON document of submit and fetch.
type result struct {
	client.Job
	Results []client.LocalFile `json:"results"`
	Output  string             `json:"output_dir,omitempty"`
}

func (fl *jobFlow) waitAndFetch(ctx context.Context, job *client.Job) error {
	// Progress (bars, job states) goes to a terminal on stderr, also with
	// --json: the JSON document is on stdout. Without a terminal, --json
	// keeps stderr for errors only.
	term := isTerminal(fl.e.stderr)
	if !job.Terminal() {
		var lastState string
		j, err := fl.c.WaitRetrying(ctx, job.JobID, func(j client.Job) {
			line := string(j.State)
			if j.State == client.StateQueued && j.Position > 0 {
				line = fmt.Sprintf("queued (position %d)", j.Position)
			}
			if line != lastState && (!fl.json || term) {
				fmt.Fprintf(fl.e.stderr, "job %s: %s\n", j.JobID, line)
			}
			lastState = line
		}, fl.backoff("wait for job "+job.JobID))
		if err != nil {
			if client.Retryable(err) {
				return fmt.Errorf("wait for job %s: %w; the job goes on: run recon fetch %s to wait for it again and download its results", job.JobID, err, job.JobID)
			}
			return err
		}
		job = j
	}
	dir := fl.output
	if dir == "" {
		dir = filepath.Join(fl.cfg.DownloadDir, job.JobID)
	}
	var files []client.LocalFile
	if len(job.Results) > 0 && !job.Delivered && !job.ResultsGone {
		var bar *progressbar.ProgressBar
		opts := &client.FetchOptions{}
		if term {
			opts.Progress = func(done, total int64) {
				if bar == nil {
					bar = newBar(fl.e.stderr, total, "download")
				}
				bar.Set64(done)
			}
		}
		j, fs, err := fl.c.FetchRetrying(ctx, job.JobID, dir, opts, fl.backoff("download the results of job "+job.JobID))
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			if client.Retryable(err) {
				return fmt.Errorf("fetch results of job %s: %w; they stay on the server: run recon fetch %s to try again", job.JobID, err, job.JobID)
			}
			return fmt.Errorf("fetch results of job %s: %w", job.JobID, err)
		}
		job, files = j, fs
	}
	if files == nil {
		files = []client.LocalFile{}
	}
	out := result{Job: *job, Results: files}
	if len(files) > 0 {
		out.Output, _ = filepath.Abs(dir)
	}
	if fl.json {
		if err := printJSON(fl.e.stdout, out); err != nil {
			return err
		}
	} else {
		printJob(fl.e.stdout, job)
		if len(files) > 0 {
			fmt.Fprintf(fl.e.stdout, "output     %s\n", out.Output)
			for _, f := range files {
				fmt.Fprintf(fl.e.stdout, "           %s (%s)\n", f.Name, humanBytes(f.Size))
			}
		} else if job.Delivered || job.ResultsGone {
			fmt.Fprintln(fl.e.stdout, "results    already delivered or expired; nothing downloaded")
		}
	}
	if job.State != client.StateSucceeded {
		return &codeError{code: exitJobFailed, err: fmt.Errorf("job %s %s", job.JobID, job.State)}
	}
	return nil
}

func newBar(w io.Writer, total int64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}

func newSubmitCmd(e *env) *cobra.Command {
	var (
		f            clientFlags
		options      []string
		output       string
		noWait       bool
		submissionID string
		reconnects   int
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] FILE...",
		Short: "Send files to the server as one reconstruction job",
		Long: `Send the files as one job, wait for it, and download its results into --output
(default CLIENT_DOWNLOAD_DIR/<job_id>). Every file is checked end to end with
SHA-256. Options reach the reconstruction script as environment variables
RECON_OPT_<KEY> and RECON_OPTIONS_JSON, never as shell text.

When the connection breaks or stalls during the upload, submit reconnects
(up to --reconnects times, waiting 1 s, then 2 s, 4 s… up to 30 s) and
resumes: the server keeps what it received (UPLOAD_RESUME_HOURS) and only the
rest is sent. A submit that gave up can be resumed later by running it again
with the same --submission-id and the same files and options. Waiting for the
job and downloading its results reconnect the same way, also through a relay
whose backend holding the job is down for a while. The first connection is
tried the same way too, while the server cannot be reached (it is starting or
restarting); a server that closes the handshake without answering (a wrong
key or port, an address it does not allow, or a busy server) is tried again
at most twice.

Exits 0 when the job succeeded, 3 when it failed or was cancelled.`,
		Args: argsRange(1, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if reconnects < 0 {
				return &usageError{fmt.Errorf("--reconnects takes a number from 0 (never reconnect) up, not %d", reconnects)}
			}
			opts, err := parseOptions(options)
			if err != nil {
				return err
			}
			c, cfg, err := f.dial(ctx, e, reconnects)
			if err != nil {
				return err
			}
			defer c.Close()
			// The id is chosen here rather than by the client package, so
			// that an interrupted upload can be named for a resume.
			sid := submissionID
			if sid == "" {
				sid = randomSubmissionID()
			}
			sopts := &client.SubmitOptions{Options: opts, SubmissionID: sid, Reconnects: reconnects}
			if reconnects == 0 {
				sopts.Reconnects = -1 // the client package reads 0 as its default
			}
			var bar *progressbar.ProgressBar
			if isTerminal(e.stderr) { // also with --json: the JSON is on stdout
				sopts.Progress = func(done, total int64) {
					if bar == nil {
						bar = newBar(e.stderr, total, "upload")
					}
					bar.Set64(done)
				}
			}
			sopts.OnReconnect = func(attempt int, err error) {
				if bar != nil {
					fmt.Fprintln(e.stderr) // leave the progress bar's line
				}
				fmt.Fprintf(e.stderr, "recon: connection lost (%v); reconnecting to resume the upload (attempt %d of %d)\n",
					err, attempt, reconnects)
			}
			sopts.OnNote = func(note string) {
				fmt.Fprintf(e.stderr, "recon: note from the server: %s\n", note)
			}
			job, err := c.Submit(ctx, args, sopts)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				if !client.Resumable(err) {
					return err
				}
				if submissionID != "" {
					return fmt.Errorf("upload interrupted: %w; the server keeps what it received for a while (UPLOAD_RESUME_HOURS): run the same command again to resume it", err)
				}
				return fmt.Errorf("upload interrupted: %w; the server keeps what it received for a while (UPLOAD_RESUME_HOURS): run the same command again with --submission-id %s to resume it", err, sopts.SubmissionID)
			}
			if noWait {
				if f.json {
					return printJSON(e.stdout, job)
				}
				fmt.Fprintln(e.stdout, job.JobID)
				return nil
			}
			fl := &jobFlow{e: e, c: c, json: f.json, output: output, cfg: cfg, reconnects: reconnects}
			return fl.waitAndFetch(ctx, job)
		},
	}
	f.register(cmd)
	cmd.Flags().StringArrayVar(&options, "option", nil, "job option `KEY=VALUE` for the script (repeatable)")
	cmd.Flags().StringVar(&output, "output", "", "`DIR` for the results (default CLIENT_DOWNLOAD_DIR/<job_id>)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "print the job id once it is queued and exit")
	cmd.Flags().StringVar(&submissionID, "submission-id", "", "client-chosen `ID` that makes a retried submission return the same job, or resume its broken upload")
	cmd.Flags().IntVar(&reconnects, "reconnects", client.DefaultReconnects, "connect, reconnect and resume the upload up to `N` more times when the server cannot be reached or the connection breaks (0: never)")
	return cmd
}

func randomSubmissionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

func parseOptions(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, &usageError{fmt.Errorf("--option %q: want KEY=VALUE", kv)}
		}
		if _, dup := m[k]; dup {
			return nil, &usageError{fmt.Errorf("--option %s given twice", k)}
		}
		m[k] = v
	}
	return m, nil
}

func newFetchCmd(e *env) *cobra.Command {
	var (
		f          clientFlags
		output     string
		reconnects int
	)
	cmd := &cobra.Command{
		Use:   "fetch [flags] JOB_ID",
		Short: "Download a job's results (waiting for it if needed)",
		Long: `Wait for the job if it is still queued or running, then download its results into
--output (default CLIENT_DOWNLOAD_DIR/<job_id>), verifying each file's SHA-256.
The server deletes the results once they are received. When the connection
breaks while waiting or downloading, or a relay's backend holding the job goes
down, fetch reconnects (up to --reconnects times, waiting 1 s, then 2 s, 4 s…
up to 30 s) and starts that step again. The first connection is tried the same
way while the server cannot be reached.

Exits 0 when the job succeeded, 3 when it failed or was cancelled.`,
		Args: argsRange(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if reconnects < 0 {
				return &usageError{fmt.Errorf("--reconnects takes a number from 0 (never reconnect) up, not %d", reconnects)}
			}
			c, cfg, err := f.dial(ctx, e, reconnects)
			if err != nil {
				return err
			}
			defer c.Close()
			job, err := c.Job(ctx, args[0])
			if err != nil {
				return err
			}
			fl := &jobFlow{e: e, c: c, json: f.json, output: output, cfg: cfg, reconnects: reconnects}
			return fl.waitAndFetch(ctx, job)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&output, "output", "", "`DIR` for the results (default CLIENT_DOWNLOAD_DIR/<job_id>)")
	cmd.Flags().IntVar(&reconnects, "reconnects", client.DefaultReconnects, "connect, reconnect and start again up to `N` more times when the server cannot be reached or the connection breaks (0: never)")
	return cmd
}
