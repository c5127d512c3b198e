package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/watch"
)

func newWatchCmd(e *env) *cobra.Command {
	var opts string
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Submit new raw-data files from a directory automatically",
		Long: `Watch CLIENT_WATCH_DIRECTORY for files matching CLIENT_WATCH_PATTERN. A file is
complete once its size and modification time have not changed for
CLIENT_DAEMON_STABILITY_DELAY seconds; complete files that arrive within
CLIENT_DAEMON_GROUPING_TIMEOUT seconds of each other form one job, submitted
with the options of CLIENT_DAEMON_RECON_OPTIONS_JSON. Results are downloaded
into CLIENT_DOWNLOAD_DIR/<group>/ with a recon-summary.json.

The state (which files were submitted as which job) is kept in
CLIENT_DAEMON_STATE_DIR, so a restart neither submits a group twice nor
forgets one. While the server cannot be reached, recon watch retries with
growing delays and keeps finding files. Files in the watched directory are
only read, never changed or deleted. JSON logs go to CLIENT_DAEMON_LOG_FILEPATH
(standard error when empty). SIGINT or SIGTERM stop it cleanly.`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWatch(cmd.Context(), e, opts)
		},
	}
	cmd.Flags().StringVar(&opts, "opts", "recon.opts", "config `file` with the client keys and CLIENT_WATCH_DIRECTORY")
	return cmd
}

func runWatch(ctx context.Context, e *env, optsPath string) error {
	cfg, err := loadConfig(e, optsPath, config.LoadClient, needWatch, nil)
	if err != nil {
		return err
	}
	if cfg.WatchDir == "" {
		return fmt.Errorf("%s: CLIENT_WATCH_DIRECTORY is not set: recon watch needs the directory to watch", optsPath)
	}
	var logOut io.Writer = e.stderr
	logName := "standard error"
	if cfg.WatchLogFile != "" {
		f, err := os.OpenFile(cfg.WatchLogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("CLIENT_DAEMON_LOG_FILEPATH: %w", err)
		}
		defer f.Close()
		logOut, logName = f, cfg.WatchLogFile
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := watch.New(watch.ConfigFrom(cfg, log))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "recon watch %s: watching %s for %s, server %s, results in %s, state in %s, log %s\n",
		versionString(), cfg.WatchDir, cfg.WatchPattern, cfg.Addr(), cfg.DownloadDir, cfg.WatchStateDir, logName)
	runErr := w.Run(ctx)
	if err := w.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close state: %w", err)
	}
	if runErr != nil {
		return runErr
	}
	fmt.Fprintln(e.stderr, "recon watch: stopped")
	return nil
}
