package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/protocol"
)

// auditOptions are the flags of recon admin audit.
type auditOptions struct {
	since    string
	identity string
	jobID    string
	verify   bool
}

func newAuditCmd(e *env) *cobra.Command {
	var o auditOptions
	cmd := &cobra.Command{
		Use:   "audit [--since TIME] [--identity NAME] [--job ID] [--verify]",
		Short: "The audit trail: who authenticated, submitted, fetched, cancelled, administered",
		Long: `Print the server's audit trail (AUDIT_LOG_FILEPATH), oldest first: sessions that
authenticated, failed handshakes summarised per address and interval, submissions
(files, sizes, SHA-256), downloads and their confirmations, cancellations, every
admin request and key reloads. --since takes an RFC 3339 time, a date
(2006-01-02) or a duration back from now (24h).

--verify has the server check the whole chain, across its rotated files, against
the chain head it keeps in its state directory: exit status 0 when it is intact,
1 naming the first bad line (edited, inserted, removed, cut off, rewritten).`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			opts := c.Flag("opts").Value.String()
			asJSON := c.Flag("json").Value.String() == "true"
			return runAudit(c.Context(), e, opts, asJSON, o)
		},
	}
	cmd.Flags().StringVar(&o.since, "since", "", "only records at or after `TIME`")
	cmd.Flags().StringVar(&o.identity, "identity", "", "only the records of identity `NAME`")
	cmd.Flags().StringVar(&o.jobID, "job", "", "only the records of job `ID`")
	cmd.Flags().BoolVar(&o.verify, "verify", false, "check the whole chain; exit 1 naming the first bad line")
	return cmd
}

func runAudit(ctx context.Context, e *env, opts string, asJSON bool, o auditOptions) error {
	req := protocol.AuditRequest{Identity: o.identity, JobID: o.jobID, Verify: o.verify}
	if o.since != "" {
		t, err := parseSince(o.since, time.Now())
		if err != nil {
			return &usageError{err}
		}
		req.Since = &t
	}
	if o.verify && (o.since != "" || o.identity != "" || o.jobID != "") {
		return &usageError{fmt.Errorf("--verify checks the whole chain; it takes no --since, --identity or --job")}
	}
	a, err := dialAdmin(ctx, e, opts)
	if err != nil {
		return err
	}
	defer a.Close()
	var records []string
	var verify *protocol.AuditVerify
	var r protocol.AuditReply
	err = a.Stream(ctx, protocol.TypeAdminAudit, req, protocol.TypeAdminAuditReply, &r, func() bool {
		records = append(records, r.Records...)
		if r.Verify != nil {
			verify = r.Verify
		}
		done := r.Done
		r = protocol.AuditReply{}
		return !done
	})
	if err != nil {
		return err
	}
	if o.verify {
		if verify == nil {
			return fmt.Errorf("the server sent no verification")
		}
		return printVerify(e, verify, asJSON)
	}
	if asJSON {
		return printJSON(e.stdout, map[string]any{"records": rawRecords(records)})
	}
	printAudit(e.stdout, records)
	return nil
}

// parseSince reads --since: an RFC 3339 time, a date, or a duration back
// from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateTime, s, time.Local); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-12-07T10:00:00Z), a date (2026-12-07), or a duration back from now (24h)", s)
}

func printVerify(e *env, v *protocol.AuditVerify, asJSON bool) error {
	if asJSON {
		if err := printJSON(e.stdout, v); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "audit trail  %s\nfiles        %d\nrecords      %d (seq %d to %d; head %d)\n",
			v.Path, v.Files, v.Records, v.FirstSeq, v.LastSeq, v.HeadSeq)
		if v.Note != "" {
			fmt.Fprintf(e.stdout, "note         %s\n", v.Note)
		}
		if v.OK {
			fmt.Fprintln(e.stdout, "chain        intact")
		}
	}
	if v.OK {
		return nil
	}
	return &codeError{code: 1, err: fmt.Errorf("audit trail broken: %s line %d: %s", v.File, v.Line, v.Reason)}
}

// auditLine is what the text listing shows of a record.
type auditLine struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Identity string    `json:"identity"`
	Role     string    `json:"role"`
	Peer     string    `json:"peer"`
	JobID    string    `json:"job_id"`
	Command  string    `json:"command"`
	Request  string    `json:"request"`
	Files    []struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	} `json:"files"`
	Added    []string `json:"added"`
	Removed  []string `json:"removed"`
	Failures int      `json:"failures"`
	Seq      uint64   `json:"seq"`
}

func printAudit(w io.Writer, records []string) {
	if len(records) == 0 {
		fmt.Fprintln(w, "no records")
		return
	}
	var rows [][]string
	for _, rec := range records {
		var l auditLine
		if err := json.Unmarshal([]byte(rec), &l); err != nil {
			continue
		}
		var detail []string
		switch {
		case l.Role != "":
			detail = append(detail, "role "+l.Role)
		case l.Command != "":
			detail = append(detail, l.Command)
			if l.Request != "" {
				detail = append(detail, l.Request)
			}
		case l.Failures > 0:
			detail = append(detail, strconv.Itoa(l.Failures)+" failed handshakes")
		}
		if len(l.Files) > 0 {
			var n int64
			for _, f := range l.Files {
				n += f.Size
			}
			detail = append(detail, fmt.Sprintf("%d files, %s", len(l.Files), humanBytes(n)))
		}
		if len(l.Added) > 0 {
			detail = append(detail, "added "+strings.Join(l.Added, ","))
		}
		if len(l.Removed) > 0 {
			detail = append(detail, "removed "+strings.Join(l.Removed, ","))
		}
		rows = append(rows, []string{strconv.FormatUint(l.Seq, 10), l.Time.Local().Format(time.DateTime), l.Kind,
			l.Identity, l.Peer, l.JobID, strings.Join(detail, "; ")})
	}
	table(w, []string{"SEQ", "TIME", "KIND", "IDENTITY", "PEER", "JOB ID", "DETAIL"}, rows)
}
