package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
)

// queueOptions are the options of recon queue.
type queueOptions struct {
	clientFlags
}

func newQueueCmd(e *env) *cobra.Command {
	var o queueOptions
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "List the jobs on the server",
		Long: `List the jobs that have not finished, in queue order (running first), and those that finished in the last 24 hours.
A server that cannot be reached, or closes the handshake without answering, is
tried twice more (after 1 s and 2 s).`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQueue(cmd.Context(), &o, e)
		},
	}
	o.register(cmd)
	return cmd
}

// runQueue lists the jobs on the server.
func runQueue(ctx context.Context, o *queueOptions, e *env) error {
	c, _, err := o.dial(ctx, e, client.AuthRetries)
	if err != nil {
		return err
	}
	defer c.Close()
	q, err := c.QueueReport(ctx)
	if err != nil {
		return err
	}
	if len(q.Unavailable) > 0 && !o.json {
		fmt.Fprintf(e.stderr, "recon: backends down, their jobs are not listed: %s\n", strings.Join(q.Unavailable, ", "))
	}
	return o.printer(e).print(q, func(w io.Writer) { printQueue(w, q.Jobs) })
}

// printQueue shows jobs as a table, one row each.
func printQueue(w io.Writer, jobs []client.Job) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs")
		return
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
	table(w, header, rows)
}
