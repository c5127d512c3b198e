package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
)

// statusOptions are the options of recon status.
type statusOptions struct {
	clientFlags
}

func newStatusCmd(e *env) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status [JOB_ID]",
		Short: "Show the server's status, or one job's",
		Long: `Without an argument, show the server's status (version, uptime, jobs by state).
With a JOB_ID, show that job; an unknown job exits non-zero. A server that cannot
be reached, or closes the handshake without answering (a wrong key or port, an
address it does not allow, or a busy server), is tried twice more (after 1 s
and 2 s).`,
		Args:              argsRange(0, 1),
		ValidArgsFunction: completeJobIDs(e, &o.clientFlags, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd.Context(), &o, args, e)
		},
	}
	o.register(cmd)
	return cmd
}

// runStatus shows the server's status, or with one argument that job's.
func runStatus(ctx context.Context, o *statusOptions, args []string, e *env) error {
	c, _, err := o.dial(ctx, e, client.AuthRetries)
	if err != nil {
		return err
	}
	defer c.Close()
	p := o.printer(e)
	if len(args) == 1 {
		j, err := c.Job(ctx, args[0])
		if err != nil {
			return err
		}
		return p.print(j, func(w io.Writer) { printJob(w, j) })
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	return p.print(st, func(w io.Writer) {
		fmt.Fprintf(w, "server version  %s\n", st.Version)
		fmt.Fprintf(w, "uptime          %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
		fmt.Fprintf(w, "workers         %d\n", st.MaxWorkers)
		fmt.Fprintf(w, "jobs            %s\n", countsLine(st.Jobs))
	})
}
