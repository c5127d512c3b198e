package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/relay"
)

// newAdminReloadCmd is `recon admin reload`; opts and asJSON are the admin
// command's persistent flags.
func newAdminReloadCmd(e *env, opts *string, asJSON *bool) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Read CLIENT_KEYS_FILE again (as SIGHUP does)",
		Long: `Have the server read its CLIENT_KEYS_FILE again: new identities may connect at
once; the sessions of a removed identity (or of a key it no longer has) are
closed and new ones refused; every identity's jobs stay. A file that fails to
load leaves the identities in force, and the error says why.`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a, err := dialAdmin(ctx, e, *opts)
			if err != nil {
				return err
			}
			defer a.Close()
			var r protocol.ReloadReply
			if err := a.Call(ctx, protocol.TypeAdminReload, protocol.Empty{}, protocol.TypeAdminReloadReply, &r); err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, r)
			}
			printReload(e.stdout, &r)
			return nil
		},
	}
}

func printReload(w io.Writer, r *protocol.ReloadReply) {
	fmt.Fprintf(w, "client keys reloaded: %d identities\n", r.Identities)
	for _, l := range []struct {
		what  string
		names []string
	}{{"added", r.Added}, {"removed", r.Removed}, {"new keys", r.Changed}} {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "%-9s %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	fmt.Fprintf(w, "sessions closed: %d\n", r.ClosedSessions)
}

// relayIdentitiesNote says, at the relay's start, which healthy backends
// do not take its clients' identities: through them every job belongs to
// the identity of BACKEND_SHARED_KEY.
func relayIdentitiesNote(e *env, r *relay.Relay) {
	for _, b := range r.Backends().Backends {
		if b.Healthy && !b.TakesIdentities {
			fmt.Fprintf(e.stderr, "recon relay: backend %s does not take the relay's client identities (its RELAY_SHARED_KEY is not BACKEND_SHARED_KEY): "+
				"every job through the relay to it belongs to the identity of BACKEND_SHARED_KEY there, and the relay's clients see each other's jobs on it\n", b.Address)
		}
	}
}
