//go:build unix

package main

import (
	"fmt"
	"path/filepath"
)

// initServer writes a server config with fresh keys, and the default
// script beside it (an existing script is kept).
func initServer(e *env, path string) error {
	if err := ensureServerConfig(e, path); err != nil {
		return err
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(e.stdout, `Wrote a new server config with fresh keys to %s (mode 0600).
Next, edit it:
  SERVER_HOSTNAME       the address clients reach this server on
  TRUSTED_IPS           the clients allowed to connect
  RECON_SCRIPT_PATH     your reconstruction script (now %s, the default: BART k-space pairs to images)
Clients need SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY from this file;
administrators SERVER_ADMIN_HOSTNAME, SERVER_ADMIN_PORT and SERVER_ADMIN_SHARED_KEY.
Then start it: recon server --opts %s
`, abs, defaultScriptName, path)
	return nil
}
