package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
)

func newCancelCmd(e *env) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "cancel JOB_ID",
		Short: "Cancel one of your jobs",
		Long: `Cancel a job this client submitted (one of its key's identity): a queued job at
once, a running one by stopping its script; the command returns once the job
has ended (or after a minute, while it is still stopping). A job of another
identity is unknown, as one that does not exist; an ended job cannot be
cancelled.`,
		Args: argsRange(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, _, err := f.dial(ctx, e, client.AuthRetries)
			if err != nil {
				return err
			}
			defer c.Close()
			rep, err := c.Cancel(ctx, args[0])
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(e.stdout, rep)
			}
			fmt.Fprintf(e.stdout, "job %s: %s, was %s\n", rep.JobID, rep.State, rep.PreviousState)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
