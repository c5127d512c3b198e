// Package servertest starts real recon servers for tests: a config file
// with fresh keys and data directories in t.TempDir(), listeners on
// 127.0.0.1 with ports the kernel picks, and a real reconstruction script.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/server"
)

// Options shape the server a test starts.
type Options struct {
	// Script is the body of the reconstruction script (a shell script); by
	// default one that copies each input to <name>.out in the output dir.
	Script string
	// ScriptPath, if set, is used as RECON_SCRIPT_PATH instead of Script.
	ScriptPath string
	// Extra holds more ITEM = VALUE lines for the config file.
	Extra map[string]string
	// Dir is the directory for config and data; t.TempDir() by default.
	// Restarting a server on the same Dir finds its jobs again.
	Dir string
	// Server holds options passed to server.New (Version is set to "test").
	Server server.Options
}

// CopyScript copies each input file to OUTPUT_DIR/<name>.out.
const CopyScript = `#!/bin/sh
set -eu
in="$1"; out="$3"
for f in "$in"/*; do
  cp "$f" "$out/$(basename "$f").out"
done
`

// Server is a started server with what a test needs to reach it.
type Server struct {
	*server.Server
	Dir      string // config and data directory
	OptsPath string // the recon.opts file
	Config   *config.Server
	Key      string // SHARED_KEY in text form
	AdminKey string // SERVER_ADMIN_SHARED_KEY in text form
	LogPath  string
}

// WriteScript writes an executable script into dir and returns its path.
func WriteScript(t testing.TB, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteConfig writes a recon.opts for a test server into dir and returns
// its path. Keys are fresh; ports are 0 (the kernel picks).
func WriteConfig(t testing.TB, dir string, opts Options) string {
	t.Helper()
	script := opts.ScriptPath
	if script == "" {
		body := opts.Script
		if body == "" {
			body = CopyScript
		}
		script = WriteScript(t, dir, "recon_script.sh", body)
	}
	lines := map[string]string{
		"SERVER_HOSTNAME":             "127.0.0.1",
		"SERVER_PORT":                 "0",
		"SHARED_KEY":                  keys.MustGenerate().Encode(),
		"SERVER_ADMIN_HOSTNAME":       "127.0.0.1",
		"SERVER_ADMIN_PORT":           "0",
		"SERVER_ADMIN_SHARED_KEY":     keys.MustGenerate().Encode(),
		"TRUSTED_IPS":                 "127.0.0.0/8,::1",
		"RECON_SCRIPT_PATH":           script,
		"RECON_SERVER_BASE_PFILE_DIR": "data/inputs",
		"RECON_JOB_OUTPUT_BASE_DIR":   "data/outputs",
		"RECON_SERVER_STATE_DIR":      "data/state",
		"LOG_FILEPATH":                "recon.log",
		"MIN_FREE_DISK_MB":            "16",
		"MAX_CONCURRENT_JOBS":         "2",
		// Tests share a busy machine: the resource gate must not hold
		// their jobs (tests of the gate set these themselves).
		"MAX_CPU_LOAD_PERCENT":    "100",
		"MIN_AVAILABLE_MEMORY_MB": "0",
	}
	for k, v := range opts.Extra {
		lines[k] = v
	}
	var b strings.Builder
	for k, v := range lines {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	p := filepath.Join(dir, "recon.opts")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Start writes a config (unless Dir already holds one), starts a server
// and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	optsPath := filepath.Join(dir, "recon.opts")
	if _, err := os.Stat(optsPath); err != nil {
		WriteConfig(t, dir, opts)
	}
	cfg, _, err := config.LoadServer(optsPath)
	if err != nil {
		t.Fatalf("load test config: %v", err)
	}
	logf, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sopts := opts.Server
	sopts.Version = "test"
	srv, err := server.New(cfg, log, sopts)
	if err != nil {
		logf.Close()
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		logf.Close()
		t.Fatalf("server.Start: %v", err)
	}
	s := &Server{
		Server:   srv,
		Dir:      dir,
		OptsPath: optsPath,
		Config:   cfg,
		Key:      cfg.SharedKey.Encode(),
		AdminKey: cfg.AdminSharedKey.Encode(),
		LogPath:  cfg.LogFile,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		logf.Close()
	})
	return s
}

// Stop shuts the server down now (it is also stopped when the test ends).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// ClientConfig is what client.Dial needs to reach this server.
func (s *Server) ClientConfig() client.Config {
	return client.Config{Address: s.Addr().String(), Key: s.Key, DialTimeout: 10 * time.Second}
}

// Dial connects a client and closes it when the test ends.
func (s *Server) Dial(t testing.TB) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.ClientConfig())
	if err != nil {
		t.Fatalf("dial test server: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Eventually polls cond every few milliseconds until it is true or the
// deadline passes, then fails the test with msg.
func Eventually(t testing.TB, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", d, msg)
		}
		time.Sleep(wait)
	}
}

// SkipUnlessStrict skips the test with the message, unless the suite runs
// in strict mode (RECON_TEST_STRICT or CI set in the environment, as `make
// test` does): there, what the machine lacks is a failure, since make test
// installs every tool the suite needs and runs as root.
func SkipUnlessStrict(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("RECON_TEST_STRICT") != "" || os.Getenv("CI") != "" {
		t.Fatalf("strict mode (RECON_TEST_STRICT): "+format, args...)
	}
	t.Skipf(format, args...)
}

// LogRecords returns the records of the JSON log file at path whose msg is
// msg, in order; none when the file does not exist yet.
func LogRecords(t testing.TB, path, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}
