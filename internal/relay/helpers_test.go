package relay_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/relay"
	"github.com/recon-mri/recon/internal/servertest"
)

// healthInterval is BACKEND_HEALTH_INTERVAL_SECONDS in these tests.
const healthInterval = 250 * time.Millisecond

// testCtx is a context bounded for one test.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startBackends starts n servers sharing the SHARED_KEY key.
func startBackends(t *testing.T, n int, key string, opts servertest.Options) []*servertest.Server {
	t.Helper()
	var out []*servertest.Server
	for range n {
		o := opts
		o.Extra = map[string]string{"SHARED_KEY": key}
		for k, v := range opts.Extra {
			o.Extra[k] = v
		}
		out = append(out, servertest.Start(t, o))
	}
	return out
}

var serverPortRE = regexp.MustCompile(`(?m)^SERVER_PORT = .*$`)

// pinPort rewrites the server's config to the port it listens on now, so a
// restart on the same Dir comes back at the same address.
func pinPort(t *testing.T, s *servertest.Server) {
	t.Helper()
	b, err := os.ReadFile(s.OptsPath)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(s.Addr().String(), ":")
	b = serverPortRE.ReplaceAll(b, []byte("SERVER_PORT = "+port))
	if err := os.WriteFile(s.OptsPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testRelay is a started relay and what a test needs to reach it.
type testRelay struct {
	*relay.Relay
	Dir      string
	OptsPath string
	Config   *config.Relay
	Key      string // SHARED_KEY_RELAY_TO_CLIENTS
	AdminKey keys.Key
}

// writeRelayConfig writes a relay.opts into dir for the given backends.
func writeRelayConfig(t testing.TB, dir string, backends []string, backendKey string, extra map[string]string) string {
	t.Helper()
	lines := map[string]string{
		"RELAY_HOSTNAME":                  "127.0.0.1",
		"RELAY_PORT":                      "0",
		"RELAY_ADMIN_HOSTNAME":            "127.0.0.1",
		"RELAY_ADMIN_PORT":                "0",
		"SHARED_KEY_RELAY_TO_CLIENTS":     keys.MustGenerate().Encode(),
		"RELAY_ADMIN_SHARED_KEY":          keys.MustGenerate().Encode(),
		"BACKEND_SHARED_KEY":              backendKey,
		"BACKEND_SERVERS":                 strings.Join(backends, ","),
		"BACKEND_HEALTH_INTERVAL_SECONDS": fmt.Sprint(healthInterval.Seconds()),
		"RELAY_STATE_DIR":                 "state",
		"LOG_FILEPATH":                    "relay.log",
		"TRUSTED_CLIENT_IPS":              "127.0.0.1",
	}
	for k, v := range extra {
		lines[k] = v
	}
	var b strings.Builder
	for k, v := range lines {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	p := filepath.Join(dir, "relay.opts")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRelay starts a relay from the config at optsPath and stops it when
// the test ends.
func startRelay(t testing.TB, optsPath string) *testRelay {
	t.Helper()
	return startRelayWith(t, optsPath, relay.Options{})
}

// startRelayWith is startRelay with options (Version defaults to
// "test-relay"). The relay logs at DEBUG into its LOG_FILEPATH.
func startRelayWith(t testing.TB, optsPath string, opts relay.Options) *testRelay {
	t.Helper()
	cfg, _, err := config.LoadRelay(optsPath)
	if err != nil {
		t.Fatalf("load relay config: %v", err)
	}
	logf, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Version == "" {
		opts.Version = "test-relay"
	}
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := relay.New(cfg, log, opts)
	if err != nil {
		logf.Close()
		t.Fatalf("relay.New: %v", err)
	}
	if err := r.Start(); err != nil {
		logf.Close()
		t.Fatalf("relay.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
		logf.Close()
	})
	return &testRelay{Relay: r, Dir: filepath.Dir(optsPath), OptsPath: optsPath, Config: cfg,
		Key: cfg.ClientSharedKey.Encode(), AdminKey: cfg.AdminSharedKey}
}

// stop shuts the relay down now.
func (r *testRelay) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("relay shutdown: %v", err)
	}
}

func (r *testRelay) clientConfig() client.Config {
	return client.Config{Address: r.Addr().String(), Key: r.Key, DialTimeout: 10 * time.Second}
}

// dial connects a client to the relay.
func (r *testRelay) dial(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, r.clientConfig())
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// admin connects to the relay's admin listener.
func (r *testRelay) admin(t *testing.T) *relay.AdminClient {
	t.Helper()
	a, err := relay.DialAdmin(testCtx(t), r.AdminAddr().String(), r.AdminKey)
	if err != nil {
		t.Fatalf("dial relay admin: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// healthy reports whether the relay sees the backend at addr as healthy.
func (r *testRelay) healthy(t *testing.T, addr string) bool {
	t.Helper()
	for _, b := range r.Backends().Backends {
		if b.Address == addr {
			return b.Healthy
		}
	}
	t.Fatalf("backend %s not listed", addr)
	return false
}

// writeInput writes a file of n bytes derived from seed and returns its path.
func writeInput(t testing.TB, dir, name string, n int, seed byte) string {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// submitAndFetch submits one file through c, waits, fetches, and checks
// that the copy script's result equals the input. It returns the job as
// submitted.
func submitAndFetch(t *testing.T, c *client.Client, in string) *client.Job {
	t.Helper()
	ctx := testCtx(t)
	job, err := c.Submit(ctx, []string{in}, nil)
	if err != nil {
		t.Fatalf("submit %s: %v", filepath.Base(in), err)
	}
	done, err := c.Wait(ctx, job.JobID, nil)
	if err != nil {
		t.Fatalf("wait %s: %v", job.JobID, err)
	}
	if done.State != "succeeded" {
		t.Fatalf("job %s ended %s: %s", job.JobID, done.State, done.Error)
	}
	out := filepath.Join(t.TempDir(), "out")
	_, files, err := c.Fetch(ctx, job.JobID, out, nil)
	if err != nil {
		t.Fatalf("fetch %s: %v", job.JobID, err)
	}
	if len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) {
		t.Fatalf("job %s: results %+v do not match the input", job.JobID, files)
	}
	return job
}

func sortedKeys(m map[string]int) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// submitConcurrently submits n inputs (input(i) makes the i-th) through r at
// once, each on its own session, waits for every job and fetches its
// results (submitAndFetch), and returns how many jobs each backend got.
func submitConcurrently(t *testing.T, r *testRelay, n int, input func(i int) string) map[string]int {
	t.Helper()
	jobs := make([]*client.Job, n)
	var wg sync.WaitGroup
	for i := range n {
		in := input(i)
		c := r.dial(t)
		wg.Go(func() { jobs[i] = submitAndFetch(t, c, in) })
	}
	wg.Wait()
	per := map[string]int{}
	for _, j := range jobs {
		if j == nil {
			t.FailNow() // submitAndFetch said why
		}
		per[j.Backend]++
	}
	return per
}
