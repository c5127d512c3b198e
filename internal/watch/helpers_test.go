//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package watch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// testTimeout bounds every test.
const testTimeout = 40 * time.Second

// env is one test's world: a watched directory, a download and a state
// directory, and the server address and key the daemon uses.
type env struct {
	t       *testing.T
	ctx     context.Context
	dir     string // watched
	downDir string
	state   string
	addr    string
	key     string
	logs    *syncBuffer
	mod     func(*Config)
	srv     *servertest.Server // the last server started
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	base := t.TempDir()
	e := &env{
		t:       t,
		ctx:     ctx,
		dir:     filepath.Join(base, "scanner"),
		downDir: filepath.Join(base, "downloads"),
		state:   filepath.Join(base, "state"),
		logs:    &syncBuffer{},
	}
	if err := os.Mkdir(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log (last lines):\n%s", e.logs.tail())
		}
	})
	return e
}

// startServer starts a real server and points the daemon at it.
func (e *env) startServer(opts servertest.Options) *servertest.Server {
	e.t.Helper()
	s := servertest.Start(e.t, opts)
	e.addr, e.key, e.srv = s.Addr().String(), s.Key, s
	return s
}

// freeAddr reserves a loopback port number nobody listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// serverLater prepares a server that is not running yet, on a fixed
// loopback port the daemon already uses; start() starts it.
func (e *env) serverLater(opts servertest.Options) (start func() *servertest.Server) {
	e.t.Helper()
	e.addr = freeAddr(e.t)
	_, port, _ := net.SplitHostPort(e.addr)
	dir := e.t.TempDir()
	if opts.Extra == nil {
		opts.Extra = map[string]string{}
	}
	opts.Extra["SERVER_PORT"] = port
	opts.Dir = dir
	servertest.WriteConfig(e.t, dir, opts)
	data, err := os.ReadFile(filepath.Join(dir, "recon.opts"))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok && k == "SHARED_KEY" {
			e.key = v
		}
	}
	if _, err := keys.Parse(e.key); err != nil {
		e.t.Fatalf("no SHARED_KEY in test config: %v", err)
	}
	return func() *servertest.Server {
		e.srv = servertest.Start(e.t, opts)
		return e.srv
	}
}

func (e *env) config() Config {
	cfg := Config{
		Dir:             e.dir,
		Pattern:         "*.7",
		PollInterval:    100 * time.Millisecond,
		StabilityDelay:  200 * time.Millisecond,
		GroupingTimeout: 300 * time.Millisecond,
		Options:         map[string]string{"method": "copy"},
		DownloadDir:     e.downDir,
		StateDir:        e.state,
		MaxAttempts:     1,
		Server:          client.Config{Address: e.addr, Key: e.key, DialTimeout: 5 * time.Second},
		Log:             slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryMin:        20 * time.Millisecond,
		RetryMax:        200 * time.Millisecond,
	}
	if e.mod != nil {
		e.mod(&cfg)
	}
	return cfg
}

// daemon is a running Watcher.
type daemon struct {
	*Watcher
	cancel context.CancelFunc
	done   chan error
	closed bool
}

// start opens and runs a daemon; it is stopped when the test ends.
func (e *env) start(h hooks) *daemon {
	e.t.Helper()
	w, err := New(e.config())
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	w.hooks = h
	ctx, cancel := context.WithCancel(e.ctx)
	d := &daemon{Watcher: w, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- w.Run(ctx) }()
	e.t.Cleanup(func() { d.stop(e.t) })
	return d
}

// stop stops the daemon as SIGTERM would and closes its state; it returns
// what Run returned.
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	if d.closed {
		return nil
	}
	d.closed = true
	d.cancel()
	var err error
	select {
	case err = <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if cerr := d.Close(); cerr != nil {
		t.Errorf("close state: %v", cerr)
	}
	return err
}

// crashed waits for a hook to stop the daemon and closes its state.
func (d *daemon) crashed(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.done:
		if !errors.Is(err, errCrash) {
			t.Fatalf("Run returned %v, want the test hook's crash", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not reach the crash point")
	}
	d.closed = true
	d.cancel()
	if err := d.Close(); err != nil {
		t.Errorf("close state: %v", err)
	}
}

// groupsWhen polls the daemon's groups (without their files) until cond
// holds, and returns them with their files.
func (e *env) groupsWhen(d *daemon, msg string, cond func([]Group) bool) []Group {
	e.t.Helper()
	servertest.Eventually(e.t, time.Until(deadline(e.ctx)), msg, func() bool {
		gs, err := d.state.groups(e.ctx, false)
		return err == nil && cond(gs)
	})
	gs, err := d.Groups(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return gs
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d.Add(-2 * time.Second)
}

func countStatus(gs []Group, status string) int {
	n := 0
	for _, g := range gs {
		if g.Status == status {
			n++
		}
	}
	return n
}

func allFinished(n int) func([]Group) bool {
	return func(gs []Group) bool {
		return len(gs) == n && countStatus(gs, StatusDone)+countStatus(gs, StatusFailed) == n
	}
}

// writeFile writes a file the way a scanner would (in place).
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func content(name string, n int) []byte {
	return bytes.Repeat([]byte(name+"|"), n/(len(name)+1)+1)[:n]
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fileMark is what must not change about a scanner file.
type fileMark struct {
	Mode  fs.FileMode
	Size  int64
	MTime time.Time
	SHA   string
}

// snapshot records every entry of dir (not following symlinks).
func snapshot(t *testing.T, dir string) map[string]fileMark {
	t.Helper()
	out := map[string]fileMark{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m := fileMark{Mode: info.Mode(), Size: info.Size(), MTime: info.ModTime()}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m.SHA = sha(data)
		}
		if info.IsDir() {
			m.Size, m.MTime = 0, time.Time{}
		}
		out[e.Name()] = m
	}
	return out
}

func checkUntouched(t *testing.T, dir string, before map[string]fileMark) {
	t.Helper()
	if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
		t.Errorf("scanner directory changed (-before +after):\n%s", diff)
	}
}

// serverJobs lists the server's jobs (all recent ones).
func serverJobs(t *testing.T, ctx context.Context, s *servertest.Server) []client.Job {
	t.Helper()
	c := s.Dial(t)
	jobs, err := c.Queue(ctx)
	if err != nil {
		t.Fatalf("queue: %v", err)
	}
	return jobs
}

// checkResults checks that a done group's download directory holds the
// copy script's output for each input, and a summary naming the job.
func (e *env) checkResults(g Group, inputs map[string][]byte) {
	e.t.Helper()
	dir := filepath.Join(e.downDir, g.Name)
	for name, data := range inputs {
		got, err := os.ReadFile(filepath.Join(dir, name+".out"))
		if err != nil {
			e.t.Errorf("group %s: %v", g.Name, err)
			continue
		}
		if !bytes.Equal(got, data) {
			e.t.Errorf("group %s: result %s.out differs from the input", g.Name, name)
		}
	}
	s := e.summary(g)
	if s.JobID != g.JobID || s.Status != g.Status || s.JobState != g.JobState {
		e.t.Errorf("summary says job %s %s/%s, state has %s %s/%s", s.JobID, s.Status, s.JobState, g.JobID, g.Status, g.JobState)
	}
}

type summaryDoc struct {
	Group
	Results []client.FileSum `json:"results"`
}

func (e *env) summary(g Group) summaryDoc {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.downDir, g.Name, SummaryName))
	if err != nil {
		e.t.Fatalf("summary of %s: %v", g.Name, err)
	}
	var s summaryDoc
	if err := json.Unmarshal(data, &s); err != nil {
		e.t.Fatalf("summary of %s: %v", g.Name, err)
	}
	return s
}

func fileNames(g Group) []string {
	var out []string
	for _, f := range g.Files {
		out = append(out, filepath.Base(f.Path))
	}
	return out
}

// logRecords returns the JSON log records with the message.
func (e *env) logRecords(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// logWhen polls the log until a record with the message satisfies cond
// (nil: any record), and returns that record.
func (e *env) logWhen(msg string, cond func(map[string]any) bool) map[string]any {
	e.t.Helper()
	var found map[string]any
	servertest.Eventually(e.t, time.Until(deadline(e.ctx)), "log record "+strconv.Quote(msg), func() bool {
		for _, r := range e.logRecords(msg) {
			if cond == nil || cond(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// recordTime is the time of a log record.
func recordTime(t *testing.T, r map[string]any) time.Time {
	t.Helper()
	s, _ := r["time"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("log record %v: time: %v", r, err)
	}
	return at
}

// completeAt returns when the daemon last judged the file complete (its
// last "file complete" record), or the zero time.
func (e *env) completeAt(path string) time.Time {
	e.t.Helper()
	var at time.Time
	for _, r := range e.logRecords("file complete") {
		if r["file"] == path {
			at = recordTime(e.t, r)
		}
	}
	return at
}

func forFile(path string) func(map[string]any) bool {
	return func(r map[string]any) bool { return r["file"] == path }
}

// filesWhen polls the daemon's groups, with their files, until cond holds.
func (e *env) filesWhen(d *daemon, msg string, cond func([]Group) bool) []Group {
	e.t.Helper()
	var gs []Group
	servertest.Eventually(e.t, time.Until(deadline(e.ctx)), msg, func() bool {
		var err error
		gs, err = d.Groups(e.ctx)
		return err == nil && cond(gs)
	})
	return gs
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) tail() string {
	s := b.String()
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func itoa(i int) string { return strconv.Itoa(i) }

// str is a log attribute as a string ("" when absent or not a string).
func str(v any) string {
	s, _ := v.(string)
	return s
}
