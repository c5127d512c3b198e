//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/server"
)

const defaultScriptName = "default_recon_script.sh"

func newServerCmd(e *env) *cobra.Command {
	return withInit(e, daemonCmd(e, &cobra.Command{
		Use:   "server",
		Short: "Run the reconstruction server",
		Long: `Run the reconstruction server: it listens for clients on SERVER_HOSTNAME:SERVER_PORT
(key SHARED_KEY) and for administrators on SERVER_ADMIN_HOSTNAME:SERVER_ADMIN_PORT
(key SERVER_ADMIN_SHARED_KEY), stores uploads, runs RECON_SCRIPT_PATH on each job
and returns the results. JSON logs go to LOG_FILEPATH.

When the --opts file does not exist, it is created with defaults and freshly
generated keys (mode 0600), with default_recon_script.sh beside it.
SIGINT or SIGTERM stop the server cleanly; a job that was running is run again
at the next start. SIGHUP reopens LOG_FILEPATH (after logrotate renamed it) and reads CLIENT_KEYS_FILE
again (as recon admin reload does).`,
	}, "recon.opts", "config `file` (created with fresh keys when missing)", runServer), initServer)
}

func runServer(ctx context.Context, e *env, optsPath string) error {
	if err := ensureServerConfig(e, optsPath); err != nil {
		return err
	}
	var warns []config.Warning
	cfg, err := loadConfig(e, optsPath, keepWarnings(config.LoadServer, &warns), "", nil)
	if err != nil {
		return err
	}
	return runDaemon(ctx, e, daemonSpec[*server.Server]{
		name: "server", logKey: "LOG_FILEPATH", logFile: cfg.LogFile, logLevel: cfg.LogLevel, warnings: warns,
		open: func(log *slog.Logger) (*server.Server, error) {
			return server.New(cfg, log, server.Options{Version: versionString()})
		},
		started: func(srv *server.Server, logName string) {
			// The metrics line comes first: once the "clients on" line is
			// out, everything the server says about its listeners is.
			if m := srv.MetricsAddr(); m != nil {
				fmt.Fprintf(e.stderr, "recon server: metrics on http://%s/metrics\n", m)
			}
			fmt.Fprintf(e.stderr, "recon server %s: clients on %s, admin on %s, log %s\n",
				versionString(), srv.Addr(), srv.AdminAddr(), logName)
		},
		hangup: func(srv *server.Server) {
			// CLIENT_KEYS_FILE again; a file that fails leaves the keys in force.
			if _, err := srv.ReloadClientKeys(); err != nil {
				fmt.Fprintf(e.stderr, "recon server: SIGHUP: %v\n", err)
			}
		},
	})
}

// ensureServerConfig writes a default config with fresh keys, and the
// default script beside it, when the config file does not exist.
func ensureServerConfig(e *env, path string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := config.WriteDefaultServer(path); err != nil {
		return fmt.Errorf("create default config: %w", err)
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(e.stderr, "recon: wrote a new config with fresh keys to %s\n", abs)
	script := filepath.Join(filepath.Dir(path), defaultScriptName)
	f, err := os.OpenFile(script, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write default script: %w", err)
	}
	if _, err := f.Write(recon.DefaultScript); err != nil {
		f.Close()
		return fmt.Errorf("write default script: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write default script: %w", err)
	}
	abs, _ = filepath.Abs(script)
	fmt.Fprintf(e.stderr, "recon: wrote the default reconstruction script to %s\n", abs)
	return nil
}
