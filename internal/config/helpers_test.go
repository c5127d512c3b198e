package config_test

import (
	"bytes"
	"encoding/base64"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
)

var update = flag.Bool("update", false, "rewrite the golden files and the README's config reference")

// testKey returns a fixed key made of 32 bytes of value b.
func testKey(t testing.TB, b byte) keys.Key {
	t.Helper()
	k, err := keys.Parse(testKeyText(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testKeyText(b byte) string {
	return base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{b}, keys.Size))
}

func mustKey(t testing.TB, s string) keys.Key {
	t.Helper()
	k, err := keys.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeOpts writes content to dir/name, mode 0600, and returns its path.
func writeOpts(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cmpOpts compare allow-lists by their canonical text; keys.Key has an Equal
// method that cmp uses.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b *allowlist.List) bool {
		return (a == nil) == (b == nil) && a.String() == b.String()
	}),
}

func mustAllowlist(t testing.TB, s string) *allowlist.List {
	t.Helper()
	l, err := allowlist.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// defaultServer is the Server of a recon.opts in dir holding only the keys.
func defaultServer(t testing.TB, path string, shared, admin keys.Key) *config.Server {
	dir := absDir(t, path)
	return &config.Server{
		Path:                    path,
		Hostname:                "localhost",
		Port:                    60000,
		SharedKey:               shared,
		TrustedIPs:              mustAllowlist(t, "127.0.0.1,::1"),
		InputBaseDir:            filepath.Join(dir, "recon_data", "inputs"),
		ScriptPath:              filepath.Join(dir, "default_recon_script.sh"),
		OutputBaseDir:           filepath.Join(dir, "recon_data", "outputs"),
		StateDir:                filepath.Join(dir, "recon_data", "state"),
		LogFile:                 filepath.Join(dir, "recon.log"),
		LogLevel:                slog.LevelInfo,
		HandshakeTimeout:        10 * time.Second,
		IdleTimeout:             5 * time.Minute,
		MaxConcurrentJobs:       1,
		MaxQueuedJobs:           10000,
		MaxFilesPerJob:          1000,
		MaxJobInputBytes:        64 << 30,
		MinFreeDiskBytes:        1024 << 20,
		MaxJobAttempts:          3,
		JobTimeout:              0,
		KillGrace:               10 * time.Second,
		ResultRetention:         168 * time.Hour,
		UploadResume:            24 * time.Hour,
		MaxResultFiles:          10000,
		MaxResultBytes:          64 << 30,
		DICOMUIDRoot:            "2.25",
		MaxCPULoadPercent:       75,
		MinAvailableMemoryBytes: 500 << 20,
		ResourceCheckInterval:   10 * time.Second,
		PACS:                    config.PACS{Delivery: "off", CalledAE: "ANY-SCP", CallingAE: "RECON", Retry: 24 * time.Hour},
		AdminHostname:           "127.0.0.1",
		AdminPort:               60003,
		AdminSharedKey:          admin,
		Executor:                "local",
		Slurm:                   config.Slurm{PollInterval: 250 * time.Millisecond},
	}
}

func defaultClient(t testing.TB, path string, shared keys.Key) *config.Client {
	dir := absDir(t, path)
	return &config.Client{
		Path:             path,
		Hostname:         "localhost",
		Port:             60000,
		SharedKey:        shared,
		DefaultPfileName: "P00000.7",
		DefaultPfilePath: "",
		DownloadDir:      filepath.Join(dir, "client_downloads"),
		WatchDir:         "",
		WatchPattern:     "*.7",
		PollInterval:     10 * time.Second,
		StabilityDelay:   5 * time.Second,
		GroupingTimeout:  5 * time.Second,
		ReconOptions:     map[string]string{},
		WatchStateDir:    filepath.Join(dir, "watch_state"),
		WatchAttempts:    1,
		WatchLogFile:     "",
	}
}

func defaultAdmin(path string, admin keys.Key) *config.Admin {
	return &config.Admin{Path: path, Hostname: "127.0.0.1", Port: 60003, SharedKey: admin}
}

func defaultRelay(t testing.TB, path string, clients, admin keys.Key) *config.Relay {
	dir := absDir(t, path)
	return &config.Relay{
		Path:             path,
		Hostname:         "localhost",
		Port:             60001,
		LogFile:          filepath.Join(dir, "relay.log"),
		LogLevel:         slog.LevelInfo,
		ClientSharedKey:  clients,
		TrustedClientIPs: nil,
		BackendServers:   []string{"localhost:60000"},
		HealthInterval:   2 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		IdleTimeout:      5 * time.Minute,
		StateDir:         filepath.Join(dir, "relay_data", "state"),
		AdminHostname:    "127.0.0.1",
		AdminPort:        60002,
		AdminSharedKey:   admin,
	}
}

func defaultRelayAdmin(path string, admin keys.Key) *config.RelayAdmin {
	return &config.RelayAdmin{Path: path, Hostname: "127.0.0.1", Port: 60002, SharedKey: admin}
}

func absDir(t testing.TB, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(abs)
}

func warningStrings(ws []config.Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

// backendKeyWarning is LoadRelay's warning for a file without
// BACKEND_SHARED_KEY (line 0) or with it empty.
func backendKeyWarning(path string, line int) string {
	return config.Warning{File: path, Line: line,
		Msg: "BACKEND_SHARED_KEY is not set: the relay cannot reach its backends until it is set to their SHARED_KEY"}.String()
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }
