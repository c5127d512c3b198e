//go:build windows

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newServerCmd on Windows: the server runs the site's script in a process
// group with markers and cgroups (internal/runner, internal/reap), which
// exist on Linux and other Unix systems only. The Windows build is for the
// scanner side: submit, status, queue, fetch, admin, relay and watch.
func newServerCmd(*env) *cobra.Command {
	return &cobra.Command{
		Use:                "server",
		Short:              "Run the reconstruction server (Linux and other Unix systems only)",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("recon server runs on Linux and other Unix systems; this Windows build is a client (submit, status, queue, fetch, admin, watch, relay)")
		},
	}
}
