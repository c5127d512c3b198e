package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/config"
)

// withInit gives a daemon's command an --init flag: write its config file
// with fresh keys (init), say what to edit next, and exit, without
// starting. An existing file is never overwritten.
func withInit(e *env, cmd *cobra.Command, init func(e *env, path string) error) *cobra.Command {
	var doInit bool
	cmd.Flags().BoolVar(&doInit, "init", false, "write the config file (--opts) with fresh keys, say what to edit next, and exit without starting")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if !doInit {
			return run(c, args)
		}
		path, err := c.Flags().GetString("opts")
		if err != nil {
			return err
		}
		if _, err := os.Stat(path); err == nil {
			abs, _ := filepath.Abs(path)
			return fmt.Errorf("--init: %s already exists; it is left as it is. Move it away to write a new one, or pass --opts with another file name", abs)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--init: %w", err)
		}
		return init(e, path)
	}
	return cmd
}

// initRelay writes a relay config with fresh keys.
func initRelay(e *env, path string) error {
	if err := config.WriteDefaultRelay(path); err != nil {
		return fmt.Errorf("create default config: %w", err)
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(e.stdout, `Wrote a new relay config with fresh keys to %s (mode 0600).
Next, edit it:
  BACKEND_SERVERS       the servers behind the relay, HOST:PORT, comma-separated
  BACKEND_SHARED_KEY    the SHARED_KEY of those servers (from their recon.opts)
  RELAY_HOSTNAME        the address clients reach the relay on
  TRUSTED_CLIENT_IPS    the clients allowed to connect
Clients use SHARED_KEY_RELAY_TO_CLIENTS from this file as their SHARED_KEY.
Then start it: recon relay --opts %s
`, abs, path)
	return nil
}
