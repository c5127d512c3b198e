package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
)

// submitOptions are the options of recon submit.
type submitOptions struct {
	clientFlags
	options      []string
	output       string
	noWait       bool
	submissionID string
	newJob       bool
	reconnects   int
	dicomRef     string
}

func newSubmitCmd(e *env) *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		Use:   "submit [flags] FILE...",
		Short: "Send files to the server as one reconstruction job",
		Long: `Send the files as one job, wait for it, and download its results into --output
(default CLIENT_DOWNLOAD_DIR/<job_id>). Every file is checked end to end, with
BLAKE3 (SHA-256 with a server of protocol version 2, or through a relay).
Options reach the reconstruction script as environment variables
RECON_OPT_<KEY> and RECON_OPTIONS_JSON, never as shell text.

Running the same submit again resumes it. The submission id is derived from
the files (their absolute paths, sizes and modification times) and the
options: the same command again, after Ctrl-C or a failure, sends only what
the server does not have yet (it keeps a broken upload for
UPLOAD_RESUME_HOURS); once the files became a job, it says "these files were
submitted as job X at T" and waits for that job and downloads its results as
usual. Changed files or other options make a new job; --new submits the same
files again as a new job. --submission-id names the submission yourself.

When the connection breaks or stalls during the upload, submit reconnects
(up to --reconnects times, waiting 1 s, then 2 s, 4 s… up to 30 s) and
resumes. Waiting for the job and downloading its results reconnect the same
way, also through a relay whose backend holding the job is down for a while.
The first connection is tried the same way too, while the server cannot be
reached (it is starting or restarting); a server that closes the handshake
without answering (a wrong key or port, an address it does not allow, or a
busy server) is tried again at most twice.

Exits 0 when the job succeeded, 3 when it failed or was cancelled, 4 when it
succeeded but nothing was downloaded (its results were downloaded before).`,
		Args: argsRange(1, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSubmit(cmd.Context(), &o, args, e)
		},
	}
	o.register(cmd)
	cmd.Flags().StringArrayVar(&o.options, "option", nil, "job option `KEY=VALUE` for the script (repeatable)")
	cmd.Flags().StringVar(&o.output, "output", "", "`DIR` for the results (default CLIENT_DOWNLOAD_DIR/<job_id>)")
	cmd.Flags().BoolVar(&o.noWait, "no-wait", false, "print the job id once it is queued and exit")
	cmd.Flags().StringVar(&o.submissionID, "submission-id", "", "`ID` of the submission, instead of the one derived from the files and options: the same id resumes a broken upload, or returns the job it became")
	cmd.Flags().StringVar(&o.dicomRef, "dicom-ref", "", "DICOM image `FILE` of the same exam: its patient, study and frame of reference are sent as the identity options (an --option of the same key wins; see docs/PACS.md)")
	cmd.Flags().BoolVar(&o.newJob, "new", false, "submit the files as a new job, even if they were submitted before")
	cmd.Flags().IntVar(&o.reconnects, "reconnects", client.DefaultReconnects, "connect, reconnect and resume the upload up to `N` more times when the server cannot be reached or the connection breaks (0: never)")
	return cmd
}

// runSubmit sends the files as one job, then follows it and downloads its
// results unless --no-wait.
func runSubmit(ctx context.Context, o *submitOptions, paths []string, e *env) error {
	if err := checkReconnects(o.reconnects); err != nil {
		return err
	}
	if o.newJob && o.submissionID != "" {
		return &usageError{fmt.Errorf("--new and --submission-id exclude each other")}
	}
	opts, err := parseOptions(o.options)
	if err != nil {
		return err
	}
	if opts, err = withDICOMRef(e, opts, o.dicomRef); err != nil {
		return err
	}
	c, cfg, err := o.dial(ctx, e, o.reconnects)
	if err != nil {
		return err
	}
	defer c.Close()
	// The id names what is submitted, so that running the same command
	// again resumes it; --new names a new submission.
	sid := o.submissionID
	switch {
	case o.newJob:
		sid = client.NewSubmissionID()
	case sid == "":
		if sid, err = client.SubmissionIDFor(paths, opts); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
	}

	up := &uploadProgress{e: e, bar: isTerminal(e.stderr)} // also with --json: the JSON is on stdout
	sopts := &client.SubmitOptions{
		Options:      opts,
		SubmissionID: sid,
		Progress:     up.progress,
		OnUpload:     up.start,
		OnNote: func(note string) {
			up.leaveLine()
			fmt.Fprintf(e.stderr, "recon: note from the server: %s\n", note)
		},
		OnExisting: func(j client.Job) {
			fmt.Fprintf(e.stderr, "recon: these files were submitted as job %s at %s (use --new to submit them again as a new job)\n",
				j.JobID, j.SubmittedAt.Local().Format(time.DateTime))
		},
		Retry: &client.Backoff{Retries: o.reconnects, OnRetry: func(retry int, err error, wait time.Duration) {
			up.leaveLine()
			fmt.Fprintf(e.stderr, "recon: connection lost (%v); reconnecting to resume the upload (attempt %d of %d) in %v\n",
				err, retry, o.reconnects, wait)
		}},
	}
	job, err := c.Submit(ctx, paths, sopts)
	up.end(err == nil)
	if err != nil {
		resume := "run the same command again to resume it"
		if o.newJob {
			resume = fmt.Sprintf("run it again with --submission-id %s instead of --new to resume it", sid)
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("upload interrupted after %s (submission id %s); the server keeps what it received for a while (UPLOAD_RESUME_HOURS): %s",
				up.howFar(), sid, resume)
		case client.Resumable(err):
			return fmt.Errorf("upload interrupted after %s (submission id %s): %w; the server keeps what it received for a while (UPLOAD_RESUME_HOURS): %s",
				up.howFar(), sid, err, resume)
		}
		return err
	}
	if o.noWait {
		return o.printer(e).print(job, func(w io.Writer) { fmt.Fprintln(w, job.JobID) })
	}
	fl := &jobFlow{e: e, c: c, json: o.json, output: o.output, cfg: cfg, reconnects: o.reconnects}
	return fl.collect(ctx, job)
}

// uploadProgress follows one submit's upload: how much the server kept
// from an earlier run, how much this run sent, and the bar on a terminal.
// The bar counts only the bytes this attempt sends (its rate too), and
// never shows more than was sent.
type uploadProgress struct {
	e           *env
	bar         bool // show a bar
	b           *progressbar.ProgressBar
	kept, total int64 // at the start of the current attempt
	done        int64 // kept plus what the current attempt sent
}

// start begins an attempt: the server kept kept of total bytes.
func (u *uploadProgress) start(kept, total int64) {
	u.leaveLine()
	u.kept, u.total, u.done = kept, total, kept
	if kept > 0 {
		fmt.Fprintf(u.e.stderr, "recon: resuming the upload: the server has %s of %s\n", humanBytes(kept), humanBytes(total))
	}
	if u.bar {
		what := "upload"
		if kept > 0 {
			what = "upload (rest)"
		}
		u.b = newBar(u.e.stderr, total-kept, what)
	}
}

func (u *uploadProgress) progress(done, _ int64) {
	u.done = done
	if u.b != nil {
		u.b.Set64(done - u.kept)
	}
}

// leaveLine ends the bar's line, leaving it as it stands.
func (u *uploadProgress) leaveLine() {
	if u.b != nil {
		u.b.Exit() // ends the line
		u.b = nil
	}
}

// end closes the bar: full when the upload completed, as it stands when
// not.
func (u *uploadProgress) end(ok bool) {
	if u.b == nil {
		return
	}
	if ok && u.done == u.total {
		u.b.Finish()
		u.b = nil
		return
	}
	u.leaveLine()
}

// howFar says how much of the upload was done.
func (u *uploadProgress) howFar() string {
	if u.total == 0 {
		return "sending nothing"
	}
	s := fmt.Sprintf("sending %s of %s", humanBytes(u.done-u.kept), humanBytes(u.total))
	if u.kept > 0 {
		s += fmt.Sprintf(" (the server had %s before)", humanBytes(u.kept))
	}
	return s
}
