package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
)

// newRedeliverCmd is `recon admin redeliver JOB_ID`: start a failed PACS
// delivery again. It reads the admin command's --opts and --json.
func newRedeliverCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "redeliver JOB_ID",
		Short: "Send a job's results to the PACS again after its delivery failed",
		Long: `Start a failed PACS delivery again (docs/PACS.md): the instances that failed are
sent again, with a fresh PACS_RETRY_HOURS; those the PACS confirmed are not.
The job's results must still be on the server.`,
		Args: argsRange(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, _ := cmd.Flags().GetString("opts")
			asJSON, _ := cmd.Flags().GetBool("json")
			ctx := cmd.Context()
			a, err := dialAdmin(ctx, e, opts)
			if err != nil {
				return err
			}
			defer a.Close()
			var r protocol.RedeliverReply
			if err := a.Call(ctx, protocol.TypeAdminRedeliver, protocol.JobRef{JobID: args[0]}, protocol.TypeAdminRedeliverReply, &r); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "job %s: PACS delivery started again, %d instance(s) to send\n", r.JobID, r.Pending)
			return nil
		},
	}
}

// printPACS writes a job's PACS delivery in words, for recon status.
func printPACS(w io.Writer, j *client.Job) {
	if j.Delivery == nil || j.Delivery.PACS == nil {
		return
	}
	p := j.Delivery.PACS
	switch p.State {
	case protocol.PACSDelivered:
		fmt.Fprintf(w, "pacs       delivered: the PACS confirmed all %d instance(s)\n", p.Instances)
	case protocol.PACSFailed:
		fmt.Fprintf(w, "pacs       failed: %d of %d instance(s) confirmed\n", p.Confirmed, p.Instances)
	default:
		fmt.Fprintf(w, "pacs       pending: %d of %d instance(s) confirmed so far\n", p.Confirmed, p.Instances)
	}
	for _, d := range p.Destinations {
		line := fmt.Sprintf("           %s %s, %d of %d confirmed", d.Route, d.State, d.Confirmed, d.Instances)
		if d.Failed > 0 {
			line += ", " + strconv.Itoa(d.Failed) + " failed"
		}
		if d.Warnings > 0 {
			line += ", " + strconv.Itoa(d.Warnings) + " with a warning"
		}
		fmt.Fprintln(w, line)
	}
	if p.Error != "" {
		fmt.Fprintf(w, "pacs error %s\n", p.Error)
	}
}

// pendingDeliveries lists, for recon admin queue, the jobs whose PACS
// delivery has not ended.
func pendingDeliveries(w io.Writer, jobs []protocol.JobInfo) {
	var rows [][]string
	for _, j := range jobs {
		if j.Delivery == nil || j.Delivery.PACS == nil || j.Delivery.PACS.State != protocol.PACSPending {
			continue
		}
		p := j.Delivery.PACS
		rows = append(rows, []string{j.JobID, p.State, fmt.Sprintf("%d/%d", p.Confirmed, p.Instances), p.Error})
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "PACS deliveries pending:")
	table(w, []string{"JOB ID", "PACS", "CONFIRMED", "LAST ERROR"}, rows)
}
