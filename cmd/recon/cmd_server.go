package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/server"
)

// shutdownTimeout bounds a clean stop after SIGINT/SIGTERM.
const shutdownTimeout = 30 * time.Second

const defaultScriptName = "default_recon_script.sh"

func newServerCmd(e *env) *cobra.Command {
	var opts string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the reconstruction server",
		Long: `Run the reconstruction server: it listens for clients on SERVER_HOSTNAME:SERVER_PORT
(key SHARED_KEY) and for administrators on SERVER_ADMIN_HOSTNAME:SERVER_ADMIN_PORT
(key SERVER_ADMIN_SHARED_KEY), stores uploads, runs RECON_SCRIPT_PATH on each job
and returns the results. JSON logs go to LOG_FILEPATH.

When the --opts file does not exist, it is created with defaults and freshly
generated keys (mode 0600), with default_recon_script.sh beside it.
SIGINT or SIGTERM stop the server cleanly; a job that was running is run again
at the next start. SIGHUP reopens LOG_FILEPATH (after logrotate renamed it).`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServer(cmd.Context(), e, opts)
		},
	}
	cmd.Flags().StringVar(&opts, "opts", "recon.opts", "config `file` (created with fresh keys when missing)")
	return cmd
}

func runServer(ctx context.Context, e *env, optsPath string) error {
	if err := ensureServerConfig(e, optsPath); err != nil {
		return err
	}
	cfg, err := loadConfig(e, optsPath, config.LoadServer, "", nil)
	if err != nil {
		return err
	}
	// SIGHUP (after a log rotation) reopens the log file; it must not end
	// the server, also before the log is open.
	hup, stopHup := notifyHangup()
	defer stopHup()
	log, err := openDaemonLog("LOG_FILEPATH", cfg.LogFile, cfg.LogLevel, e.stderr)
	if err != nil {
		return err
	}
	defer log.Close()

	srv, err := server.New(cfg, log.Logger, server.Options{Version: versionString()})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	// The metrics line comes first: once the "clients on" line is out,
	// everything the server says about its listeners is.
	if m := srv.MetricsAddr(); m != nil {
		fmt.Fprintf(e.stderr, "recon server: metrics on http://%s/metrics\n", m)
	}
	fmt.Fprintf(e.stderr, "recon server %s: clients on %s, admin on %s, log %s\n",
		versionString(), srv.Addr(), srv.AdminAddr(), log.name)
	if log.waitStop(ctx, srv.Done(), hup, e.stderr) {
		fmt.Fprintln(e.stderr, "recon server: stopping")
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "recon server: stopped")
	return nil
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
