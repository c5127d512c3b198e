package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/relay"
)

func newRelayCmd(e *env) *cobra.Command {
	return withInit(e, daemonCmd(e, &cobra.Command{
		Use:   "relay",
		Short: "Run a relay in front of several reconstruction servers",
		Long: `Run a relay: one address (RELAY_HOSTNAME:RELAY_PORT, key SHARED_KEY_RELAY_TO_CLIENTS)
in front of the recon servers in BACKEND_SERVERS, which it reaches with
BACKEND_SHARED_KEY (their RELAY_SHARED_KEY, or a client key). Clients use it exactly like a server.
Each submission goes to the healthy backend with the most free workers, then
the shortest queue; which backend holds
which job is kept in RELAY_STATE_DIR, so status and fetch find it, also after a
restart. Backends are health-checked every BACKEND_HEALTH_INTERVAL_SECONDS.
Administrators use 'recon relay-admin' on RELAY_ADMIN_HOSTNAME:RELAY_ADMIN_PORT
(key RELAY_ADMIN_SHARED_KEY). JSON logs go to LOG_FILEPATH.

When the --opts file does not exist, it is created with defaults and freshly
generated keys (mode 0600); the relay then still needs BACKEND_SHARED_KEY set
to the backends' SHARED_KEY before it starts. SIGINT or SIGTERM stop it
cleanly; SIGHUP reopens LOG_FILEPATH (after logrotate renamed it) and reads
CLIENT_KEYS_FILE again (as recon relay-admin reload does).`,
	}, "relay.opts", "config `file` (created with fresh keys when missing)", runRelay), initRelay)
}

func runRelay(ctx context.Context, e *env, optsPath string) error {
	if _, err := os.Stat(optsPath); errors.Is(err, fs.ErrNotExist) {
		if err := config.WriteDefaultRelay(optsPath); err != nil {
			return fmt.Errorf("create default config: %w", err)
		}
		abs, _ := filepath.Abs(optsPath)
		fmt.Fprintf(e.stderr, "recon: wrote a new relay config with fresh keys to %s\n", abs)
	}
	// An unset BACKEND_SHARED_KEY is refused below with a better message
	// than the loader's warning.
	var warns []config.Warning
	cfg, err := loadConfig(e, optsPath, keepWarnings(config.LoadRelay, &warns), "", func(c *config.Relay, w config.Warning) bool {
		return c != nil && c.BackendSharedKey.IsZero() && strings.Contains(w.Msg, "BACKEND_SHARED_KEY")
	})
	if err != nil {
		return err
	}
	if cfg.BackendSharedKey.IsZero() {
		return fmt.Errorf("%s: BACKEND_SHARED_KEY is not set: set it to the RELAY_SHARED_KEY of the servers in BACKEND_SERVERS (%s), or a client key of theirs, then start the relay again",
			optsPath, strings.Join(cfg.BackendServers, ", "))
	}
	return runDaemon(ctx, e, daemonSpec[*relay.Relay]{
		name: "relay", logKey: "LOG_FILEPATH", logFile: cfg.LogFile, logLevel: cfg.LogLevel, warnings: warns,
		open: func(log *slog.Logger) (*relay.Relay, error) {
			return relay.New(cfg, log, relay.Options{Version: versionString()})
		},
		started: func(r *relay.Relay, logName string) {
			healthy := 0
			for _, b := range r.Backends().Backends {
				if b.Healthy {
					healthy++
				}
			}
			fmt.Fprintf(e.stderr, "recon relay %s: clients on %s, admin on %s, backends %d (%d healthy), log %s\n",
				versionString(), r.Addr(), r.AdminAddr(), len(cfg.BackendServers), healthy, logName)
			relayIdentitiesNote(e, r)
		},
		hangup: func(r *relay.Relay) {
			if _, err := r.ReloadClientKeys(); err != nil {
				fmt.Fprintf(e.stderr, "recon relay: SIGHUP: %v\n", err)
			}
		},
	})
}

// relayAdminFlags are the flags of every relay-admin command.
type relayAdminFlags struct {
	opts string
	json bool
}

func newRelayAdminCmd(e *env) *cobra.Command {
	f := &relayAdminFlags{}
	cmd := &cobra.Command{
		Use:   "relay-admin",
		Short: "Watch a relay: its status, backends and clients",
		Long: `Ask a running relay, on its admin listener (RELAY_ADMIN_HOSTNAME:RELAY_ADMIN_PORT,
key RELAY_ADMIN_SHARED_KEY from --opts), for its status, its backends' health
or its connected clients. --json prints one JSON document.`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return &usageError{errors.New("recon relay-admin needs a command: status, backends or clients")}
		},
	}
	cmd.PersistentFlags().StringVar(&f.opts, "opts", "relay.opts", "config `file` with RELAY_ADMIN_HOSTNAME, RELAY_ADMIN_PORT and RELAY_ADMIN_SHARED_KEY")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print one JSON document instead of text")
	sub := func(use, short string, run func(ctx context.Context, a *relay.AdminClient) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  argsRange(0, 0),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				a, err := f.dial(ctx, e)
				if err != nil {
					return err
				}
				defer a.Close()
				return run(ctx, a)
			},
		}
	}
	cmd.AddCommand(
		sub("reload", "Read CLIENT_KEYS_FILE again (as SIGHUP does)", func(ctx context.Context, a *relay.AdminClient) error {
			r, err := a.Reload(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(e.stdout, r)
			}
			printReload(e.stdout, r)
			return nil
		}),
		sub("status", "Show the relay's version, uptime, clients and traffic", func(ctx context.Context, a *relay.AdminClient) error {
			st, err := a.Status(ctx)
			if err != nil {
				return err
			}
			return printer{e.stdout, f.json}.print(st, func(w io.Writer) {
				fmt.Fprintf(w, "relay version   %s\n", st.Version)
				fmt.Fprintf(w, "uptime          %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
				fmt.Fprintf(w, "clients         %d connected, %d since start\n", st.ClientsConnected, st.ClientsTotal)
				fmt.Fprintf(w, "jobs relayed    %d\n", st.JobsRelayed)
				fmt.Fprintf(w, "bytes relayed   %s in, %s out\n", humanBytes(st.BytesIn), humanBytes(st.BytesOut))
				fmt.Fprintf(w, "backends        %d of %d healthy\n", st.BackendsHealthy, st.Backends)
			})
		}),
		sub("backends", "Show each backend's health and load", func(ctx context.Context, a *relay.AdminClient) error {
			bs, err := a.Backends(ctx)
			if err != nil {
				return err
			}
			return printer{e.stdout, f.json}.print(bs, func(w io.Writer) {
				var rows [][]string
				for _, b := range bs.Backends {
					health := "down"
					if b.Healthy {
						health = "up"
					}
					check, latency := "never", "-"
					if !b.LastCheck.IsZero() {
						check = b.LastCheck.Local().Format(time.TimeOnly)
					}
					if b.LatencySeconds > 0 {
						latency = (time.Duration(b.LatencySeconds * float64(time.Second))).Round(10 * time.Microsecond).String()
					}
					lastErr := b.LastError
					if lastErr != "" && !b.LastErrorAt.IsZero() {
						lastErr = b.LastErrorAt.Local().Format(time.TimeOnly) + " " + lastErr
					}
					rows = append(rows, []string{b.Address, health, strconv.Itoa(b.Queued), strconv.Itoa(b.Running),
						strconv.FormatInt(b.JobsPlaced, 10), latency, check, lastErr})
				}
				table(w, []string{"ADDRESS", "HEALTH", "QUEUED", "RUNNING", "PLACED", "LATENCY", "LAST CHECK", "LAST ERROR"}, rows)
			})
		}),
		sub("clients", "List the clients connected to the relay", func(ctx context.Context, a *relay.AdminClient) error {
			cs, err := a.Clients(ctx)
			if err != nil {
				return err
			}
			return printer{e.stdout, f.json}.print(cs, func(w io.Writer) {
				if len(cs.Clients) == 0 {
					fmt.Fprintln(w, "no clients connected")
					return
				}
				var rows [][]string
				for _, c := range cs.Clients {
					req := c.Request
					if req == "" {
						req = "-"
					}
					if c.JobID != "" {
						req += " " + c.JobID
					}
					if c.Backend != "" {
						req += " @ " + c.Backend
					}
					rows = append(rows, []string{c.Address, c.Identity, c.ConnectedSince.Local().Format(time.DateTime),
						strconv.FormatInt(c.Requests, 10), humanBytes(c.BytesIn), humanBytes(c.BytesOut), req})
				}
				table(w, []string{"ADDRESS", "IDENTITY", "CONNECTED SINCE", "REQUESTS", "BYTES IN", "BYTES OUT", "CURRENT REQUEST"}, rows)
			})
		}),
	)
	return cmd
}

func (f *relayAdminFlags) dial(ctx context.Context, e *env) (*relay.AdminClient, error) {
	cfg, err := loadConfig(e, f.opts, config.LoadRelayAdmin, needRelayAdmin, nil)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, client.DefaultDialTimeout)
	defer cancel()
	return relay.DialAdmin(dctx, cfg.Addr(), cfg.SharedKey)
}
