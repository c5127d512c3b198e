package main

import (
	"context"
	"errors"
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

// What the client commands (status, queue, submit, fetch: cmd_*.go)
// share: their flags, the connection, how a job is shown, and the tail of
// submit and fetch.

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

// printer is the printer of the command's result on e's standard output.
func (f *clientFlags) printer(e *env) printer { return printer{w: e.stdout, json: f.json} }

// config loads the client config and the address to dial.
func (f *clientFlags) config(e *env) (*config.Client, string, error) {
	cfg, err := loadConfig(e, f.opts, config.LoadClient, needClient, nil)
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort(cfg.Hostname, strconv.Itoa(cfg.Port))
	if f.server != "" {
		if _, _, err := net.SplitHostPort(f.server); err != nil {
			return nil, "", &usageError{fmt.Errorf("--server %q: want HOST:PORT", f.server)}
		}
		addr = f.server
	}
	return cfg, addr, nil
}

// dial loads the client config and connects, trying again up to
// reconnects times (0: never) while the server cannot be reached or closes
// the handshake without answering (see client.DialRetrying).
func (f *clientFlags) dial(ctx context.Context, e *env, reconnects int) (*client.Client, *config.Client, error) {
	cfg, addr, err := f.config(e)
	if err != nil {
		return nil, nil, err
	}
	c, err := client.DialRetrying(ctx, client.Config{Address: addr, Key: cfg.SharedKey.Encode()},
		client.Backoff{Retries: reconnects, OnRetry: func(retry int, err error, wait time.Duration) {
			fmt.Fprintf(e.stderr, "recon: %v; trying again in %v (attempt %d of %d)\n", err, wait, retry, reconnects)
		}})
	if err != nil {
		return nil, nil, err
	}
	return c, cfg, nil
}

// checkReconnects refuses a negative --reconnects.
func checkReconnects(n int) error {
	if n < 0 {
		return &usageError{fmt.Errorf("--reconnects takes a number from 0 (never reconnect) up, not %d", n)}
	}
	return nil
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
	fmt.Fprintf(w, "state      %s\n", stateLine(j))
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
	printPACS(w, j)
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

// result is the JSON document of submit and fetch.
type result struct {
	client.Job
	Results []client.LocalFile `json:"results"`
	Output  string             `json:"output_dir,omitempty"`
}

// errNothingFetched is the error of a submit or fetch whose job succeeded
// but whose results were downloaded before or have expired: nothing was
// written (exit code exitNothingFetched).
var errNothingFetched = errors.New("nothing downloaded")

// collect follows the job until it ends and downloads its results
// (client.Collect), then prints the job and where its results went.
func (fl *jobFlow) collect(ctx context.Context, job *client.Job) error {
	// Progress (bars, job states) goes to a terminal on stderr, also with
	// --json: the JSON document is on stdout. Without a terminal, --json
	// keeps stderr for errors only.
	term := isTerminal(fl.e.stderr)
	var lastState string
	var bar *progressbar.ProgressBar
	opts := &client.CollectOptions{
		OnEvent: func(j client.Job) {
			line := stateLine(&j)
			if line != lastState && (!fl.json || term) {
				fmt.Fprintf(fl.e.stderr, "job %s: %s\n", j.JobID, line)
			}
			lastState = line
		},
		Retry: client.Backoff{Retries: fl.reconnects, OnRetry: func(retry int, err error, wait time.Duration) {
			if bar != nil {
				bar.Exit()
				bar = nil
			}
			fmt.Fprintf(fl.e.stderr, "recon: %v; reconnecting in %v (attempt %d of %d)\n", err, wait, retry, fl.reconnects)
		}},
	}
	if term {
		opts.Progress = func(done, total int64) {
			if bar == nil {
				bar = newBar(fl.e.stderr, total, "download")
			}
			bar.Set64(done)
		}
	}
	dir := fl.output
	if dir == "" {
		dir = filepath.Join(fl.cfg.DownloadDir, job.JobID)
	}
	id := job.JobID
	job, files, err := fl.c.Collect(ctx, job, dir, opts)
	if bar != nil {
		if err == nil {
			bar.Finish()
		} else {
			bar.Exit() // the bar shows what arrived, no more
		}
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted: job %s goes on, and its results stay on the server: run recon fetch %s to wait for it again and download them", id, id)
		case client.Retryable(err):
			return fmt.Errorf("%w; the job goes on, and its results stay on the server: run recon fetch %s to try again", err, id)
		}
		return err
	}
	if files == nil {
		files = []client.LocalFile{}
	}
	out := result{Job: *job, Results: files}
	if len(files) > 0 {
		out.Output, _ = filepath.Abs(dir)
	}
	nothing := len(files) == 0 && (job.Delivered || job.ResultsGone)
	err = printer{w: fl.e.stdout, json: fl.json}.print(out, func(w io.Writer) {
		printJob(w, job)
		if len(files) > 0 {
			fmt.Fprintf(w, "output     %s\n", out.Output)
			for _, f := range files {
				fmt.Fprintf(w, "           %s (%s)\n", f.Name, humanBytes(f.Size))
			}
		} else {
			fmt.Fprintln(w, "results    "+noResultsLine(job))
		}
	})
	if err != nil {
		return err
	}
	if job.State != client.StateSucceeded {
		return &codeError{code: exitJobFailed, err: fmt.Errorf("job %s %s", job.JobID, job.State)}
	}
	if nothing {
		return &codeError{code: exitNothingFetched, err: fmt.Errorf("job %s: %w: its results were downloaded before or have expired", job.JobID, errNothingFetched)}
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
