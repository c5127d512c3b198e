package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
)

// fetchOptions are the options of recon fetch.
type fetchOptions struct {
	clientFlags
	output     string
	reconnects int
}

func newFetchCmd(e *env) *cobra.Command {
	var o fetchOptions
	cmd := &cobra.Command{
		Use:   "fetch [flags] JOB_ID",
		Short: "Download a job's results (waiting for it if needed)",
		Long: `Wait for the job if it is still queued or running, then download its results into
--output (default CLIENT_DOWNLOAD_DIR/<job_id>), checking each file end to end
(BLAKE3, or SHA-256 with a server of protocol version 2); --json gives each
file's SHA-256, for sha256sum. The server deletes the results once they are
received. When the connection
breaks while waiting or downloading, or a relay's backend holding the job goes
down, fetch reconnects (up to --reconnects times, waiting 1 s, then 2 s, 4 s…
up to 30 s) and starts that step again. The first connection is tried the same
way while the server cannot be reached.

Exits 0 when the job succeeded and its results were downloaded, 3 when it
failed or was cancelled, 4 when it succeeded but nothing was downloaded: its
results were downloaded before (by an earlier fetch or submit) or expired.`,
		Args:              argsRange(1, 1),
		ValidArgsFunction: completeJobIDs(e, &o.clientFlags, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFetch(cmd.Context(), &o, args[0], e)
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&o.output, "output", "", "`DIR` for the results (default CLIENT_DOWNLOAD_DIR/<job_id>)")
	cmd.Flags().IntVar(&o.reconnects, "reconnects", client.DefaultReconnects, "connect, reconnect and start again up to `N` more times when the server cannot be reached or the connection breaks (0: never)")
	return cmd
}

// runFetch waits for job id and downloads its results.
func runFetch(ctx context.Context, o *fetchOptions, id string, e *env) error {
	if err := checkReconnects(o.reconnects); err != nil {
		return err
	}
	c, cfg, err := o.dial(ctx, e, o.reconnects)
	if err != nil {
		return err
	}
	defer c.Close()
	job, err := c.Job(ctx, id)
	if err != nil {
		return err
	}
	fl := &jobFlow{e: e, c: c, json: o.json, output: o.output, cfg: cfg, reconnects: o.reconnects}
	return fl.collect(ctx, job)
}
