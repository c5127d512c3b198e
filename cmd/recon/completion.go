package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/protocol"
)

// completionTimeout bounds the server round trip of a completion: a shell
// waits for it on every Tab.
const completionTimeout = 2 * time.Second

// completeJobIDs completes the first n arguments of a client command with
// the ids of the jobs on the server (recon queue), each described by its
// state. It says nothing on any error (no config, server down, wrong key):
// a Tab then simply completes nothing.
func completeJobIDs(e *env, f *clientFlags, n int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		quiet := &env{stdin: e.stdin, stdout: io.Discard, stderr: io.Discard}
		c, _, err := f.dial(ctx, quiet, 0)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()
		jobs, err := c.Queue(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return jobCompletions(jobs, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// jobCompletions are the ids of jobs that start with prefix, each with
// its state as the description.
func jobCompletions(jobs []protocol.JobInfo, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, j := range jobs {
		if strings.HasPrefix(j.JobID, prefix) {
			out = append(out, cobra.CompletionWithDesc(j.JobID, string(j.State)))
		}
	}
	return out
}

// completeAdminJobIDs completes the job id of an admin command from the
// admin queue, read with the admin config at *opts; silent on any error.
func completeAdminJobIDs(e *env, opts *string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= 1 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		quiet := &env{stdin: e.stdin, stdout: io.Discard, stderr: io.Discard}
		a, err := dialAdmin(ctx, quiet, *opts)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer a.Close()
		var q protocol.QueueReply
		if err := a.Call(ctx, protocol.TypeAdminQueue, protocol.Empty{}, protocol.TypeAdminQueueReply, &q); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return jobCompletions(q.Jobs, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}
