package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/watch"
)

func newWatchCmd(e *env) *cobra.Command {
	return daemonCmd(e, &cobra.Command{
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
(standard error when empty); SIGHUP reopens that file after a log rotation.
SIGINT or SIGTERM stop it cleanly.`,
	}, "recon.opts", "config `file` with the client keys and CLIENT_WATCH_DIRECTORY", runWatch)
}

func runWatch(ctx context.Context, e *env, optsPath string) error {
	var warns []config.Warning
	cfg, err := loadConfig(e, optsPath, keepWarnings(config.LoadClient, &warns), needWatch, nil)
	if err != nil {
		return err
	}
	if cfg.WatchDir == "" {
		return fmt.Errorf("%s: CLIENT_WATCH_DIRECTORY is not set: recon watch needs the directory to watch", optsPath)
	}
	return runDaemon(ctx, e, daemonSpec[*watchService]{
		name: "watch", logKey: "CLIENT_DAEMON_LOG_FILEPATH", logFile: cfg.WatchLogFile, logLevel: slog.LevelInfo,
		warnings: warns,
		open: func(log *slog.Logger) (*watchService, error) {
			w, err := watch.New(watch.ConfigFrom(cfg, log))
			if err != nil {
				return nil, err
			}
			return newWatchService(w), nil
		},
		started: func(_ *watchService, logName string) {
			fmt.Fprintf(e.stderr, "recon watch %s: watching %s for %s, server %s, results in %s, state in %s, log %s\n",
				versionString(), cfg.WatchDir, cfg.WatchPattern, cfg.Addr(), cfg.DownloadDir, cfg.WatchStateDir, logName)
		},
	})
}
