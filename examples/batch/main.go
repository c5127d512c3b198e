// Command batch submits every file matching a glob to a recon server as its
// own job, a few at a time, waits for all of them, downloads their results
// and prints a summary table.
//
//	go run ./examples/batch --opts recon.opts --glob 'raw/P*.7' --concurrency 4 \
//	    --output results --option method=pics
//
// Each worker holds one connection (a recon client runs one request at a
// time). The results of a job go to OUTPUT/JOB_ID/. The exit status is 0
// when every job succeeded, 1 when any failed or could not be submitted,
// and 2 for a bad command line.
//
// It is an example of the client package (github.com/recon-mri/recon/client):
// LoadConfig, Dial, Submit, Wait, Fetch and Close.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/recon-mri/recon/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "batch:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "batch:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line (exit status 2).
type usageError struct{ error }

// errJobsFailed is returned when the batch ran but not every job succeeded.
var errJobsFailed = errors.New("not every job succeeded")

// options are the command-line settings.
type options struct {
	opts        string
	glob        string
	concurrency int
	output      string
	jobOptions  map[string]string
}

// optionFlag collects repeated --option KEY=VALUE flags.
type optionFlag map[string]string

func (o optionFlag) String() string { return "" }

func (o optionFlag) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", kv)
	}
	if _, dup := o[k]; dup {
		return fmt.Errorf("option %s given twice", k)
	}
	o[k] = v
	return nil
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{jobOptions: map[string]string{}}
	fs := flag.NewFlagSet("batch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.opts, "opts", "recon.opts", "client config `file` (SERVER_HOSTNAME, SERVER_PORT, SHARED_KEY)")
	fs.StringVar(&o.glob, "glob", "", "`pattern` of the files to submit, one job per file (required)")
	fs.IntVar(&o.concurrency, "concurrency", 4, "jobs in flight at a time, one connection each")
	fs.StringVar(&o.output, "output", "batch-results", "`dir` for the results; each job's go to DIR/JOB_ID")
	fs.Var(optionFlag(o.jobOptions), "option", "job option `KEY=VALUE` for the script (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: batch --glob PATTERN [--opts FILE] [--concurrency N] [--output DIR] [--option KEY=VALUE]...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return nil, usageError{fmt.Errorf("unexpected argument %q (quote the --glob pattern)", fs.Arg(0))}
	case o.glob == "":
		return nil, usageError{errors.New("--glob is required")}
	case o.concurrency < 1:
		return nil, usageError{fmt.Errorf("--concurrency %d: want at least 1", o.concurrency)}
	}
	return o, nil
}

// outcome is one file's row in the summary.
type outcome struct {
	file    string
	jobID   string
	state   string // a job state, or "error" when there is no job or no final state
	seconds float64
	results int
	err     error
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(o.glob)
	if err != nil {
		return usageError{fmt.Errorf("--glob %q: %w", o.glob, err)}
	}
	files = regularFiles(files)
	if len(files) == 0 {
		return fmt.Errorf("no file matches %q", o.glob)
	}
	cfg, warns, err := client.LoadConfig(o.opts)
	if err != nil {
		return err
	}
	for _, w := range warns {
		fmt.Fprintln(stderr, "batch: warning:", w)
	}

	results := make([]outcome, len(files))
	next := make(chan int)
	var (
		wg    sync.WaitGroup
		outMu sync.Mutex // serialises progress lines
	)
	for range min(o.concurrency, len(files)) {
		wg.Go(func() {
			w := &worker{cfg: cfg, opts: o}
			defer w.close()
			for i := range next {
				r := w.process(ctx, files[i])
				results[i] = r
				outMu.Lock()
				fmt.Fprintln(stderr, progressLine(r))
				outMu.Unlock()
			}
		})
	}
feed:
	for i := range files {
		select {
		case next <- i:
		case <-ctx.Done():
			// Files never handed out keep their zero outcome.
			for j := i; j < len(files); j++ {
				results[j] = outcome{file: files[j], state: "error", err: ctx.Err()}
			}
			break feed
		}
	}
	close(next)
	wg.Wait()

	printSummary(stdout, results)
	for _, r := range results {
		if r.state != "succeeded" {
			return errJobsFailed
		}
	}
	return nil
}

// regularFiles drops directories and other non-files from a glob's matches.
func regularFiles(paths []string) []string {
	var out []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
	}
	return out
}

// worker owns one connection, dialled when first needed and again after
// a request broke it.
type worker struct {
	cfg  client.Config
	opts *options
	c    *client.Client
}

func (w *worker) close() {
	if w.c != nil {
		w.c.Close()
		w.c = nil
	}
}

// process submits one file, waits for its job and downloads the results.
func (w *worker) process(ctx context.Context, file string) outcome {
	start := time.Now()
	r := outcome{file: file, state: "error"}
	err := w.submitWaitFetch(ctx, file, &r)
	r.seconds = time.Since(start).Seconds()
	if err != nil {
		r.err = err
		if !isServerError(err) {
			// The session may be broken: dial afresh for the next file.
			w.close()
		}
	}
	return r
}

func (w *worker) submitWaitFetch(ctx context.Context, file string, r *outcome) error {
	if w.c == nil {
		c, err := client.Dial(ctx, w.cfg)
		if err != nil {
			return err
		}
		w.c = c
	}
	job, err := w.c.Submit(ctx, []string{file}, &client.SubmitOptions{Options: w.opts.jobOptions})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	r.jobID = job.JobID
	job, err = w.c.Wait(ctx, job.JobID, nil)
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	r.state, r.results = string(job.State), len(job.Results)
	if len(job.Results) > 0 {
		if _, _, err := w.c.Fetch(ctx, job.JobID, filepath.Join(w.opts.output, job.JobID), nil); err != nil {
			r.state = "error"
			return fmt.Errorf("fetch: %w", err)
		}
	}
	if job.State != client.StateSucceeded && job.Error != "" {
		return errors.New(job.Error)
	}
	return nil
}

func isServerError(err error) bool {
	var e *client.Error
	return errors.As(err, &e)
}

func progressLine(r outcome) string {
	s := fmt.Sprintf("%s: %s", r.file, r.state)
	if r.jobID != "" {
		s = fmt.Sprintf("%s: job %s %s", r.file, r.jobID, r.state)
	}
	if r.err != nil {
		s += ": " + r.err.Error()
	}
	return s
}

// printSummary writes the table: one row per file, in glob order.
func printSummary(w io.Writer, rows []outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tJOB ID\tSTATE\tSECONDS\tRESULTS")
	counts := map[string]int{}
	for _, r := range rows {
		id := r.jobID
		if id == "" {
			id = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", r.file, id, r.state, strconv.FormatFloat(r.seconds, 'f', 1, 64), r.results)
		counts[r.state]++
	}
	tw.Flush()
	var parts []string
	for _, s := range []string{"succeeded", "failed", "cancelled", "error"} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	fmt.Fprintf(w, "%d job(s): %s\n", len(rows), strings.Join(parts, ", "))
}
