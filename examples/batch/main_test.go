package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/servertest"
)

// batchScript writes NAME.out (naming the method option) for each input and
// fails on inputs whose name contains "bad".
const batchScript = `#!/bin/sh
set -eu
in="$1"; out="$3"
for f in "$in"/*; do
  n=$(basename "$f")
  case "$n" in *bad*) echo "cannot reconstruct $n" >&2; exit 1 ;; esac
  echo "method=${RECON_OPT_METHOD:-fft}" > "$out/$n.out"
done
`

// setup starts a server, writes a client config and raw files named names
// into a temp dir, and returns that dir.
func setup(t *testing.T, names ...string) (dir string, srv *servertest.Server) {
	t.Helper()
	srv = servertest.Start(t, servertest.Options{
		Script: batchScript,
		Extra:  map[string]string{"MAX_CPU_LOAD_PERCENT": "100", "MIN_AVAILABLE_MEMORY_MB": "0"},
	})
	dir = t.TempDir()
	// The client config a user would have: three keys.
	host, port, err := net.SplitHostPort(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n", host, port, srv.Key)
	if err := os.WriteFile(filepath.Join(dir, "recon.opts"), []byte(opts), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "raw"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, "raw", n), []byte("raw data of "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, srv
}

func runBatch(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err = run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

var rowRE = regexp.MustCompile(`(?m)^(\S+)\s+([a-z0-9]+|-)\s+([a-z]+)\s+([0-9.]+)\s+([0-9]+)$`)

type row struct{ file, jobID, state, results string }

func parseRows(t *testing.T, out string) map[string]row {
	t.Helper()
	if !strings.HasPrefix(out, "FILE") || !strings.Contains(out, "JOB ID") {
		t.Fatalf("summary has no header:\n%s", out)
	}
	rows := map[string]row{}
	for _, m := range rowRE.FindAllStringSubmatch(out, -1) {
		rows[filepath.Base(m[1])] = row{m[1], m[2], m[3], m[5]}
	}
	return rows
}

func TestBatchAllSucceed(t *testing.T) {
	names := []string{"P00000.7", "P00001.7", "P00002.7", "P00003.7", "P00004.7"}
	dir, srv := setup(t, append(names, "notes.txt")...)
	out := filepath.Join(dir, "results")
	stdout, stderr, err := runBatch(t, "--opts", filepath.Join(dir, "recon.opts"),
		"--glob", filepath.Join(dir, "raw", "*.7"), "--concurrency", "2",
		"--output", out, "--option", "method=pics")
	if err != nil {
		t.Fatalf("batch: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	rows := parseRows(t, stdout)
	if len(rows) != len(names) {
		t.Fatalf("summary has %d rows, want %d:\n%s", len(rows), len(names), stdout)
	}
	for _, n := range names {
		r, ok := rows[n]
		if !ok {
			t.Errorf("no row for %s:\n%s", n, stdout)
			continue
		}
		if r.state != "succeeded" || r.results != "1" {
			t.Errorf("%s: state %s, %s result(s); want succeeded, 1", n, r.state, r.results)
		}
		b, err := os.ReadFile(filepath.Join(out, r.jobID, n+".out"))
		if err != nil {
			t.Errorf("%s: result not downloaded: %v", n, err)
		} else if string(b) != "method=pics\n" {
			t.Errorf("%s: result %q, want the option to reach the script", n, b)
		}
	}
	if !strings.Contains(stdout, "5 job(s): 5 succeeded") {
		t.Errorf("summary lacks the totals line:\n%s", stdout)
	}
	// One connection per worker: at most two sessions for five jobs.
	log, err := os.ReadFile(srv.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), `"msg":"session authenticated"`); n < 1 || n > 2 {
		t.Errorf("server saw %d client sessions, want 1 or 2 (one per worker)", n)
	}
}

func TestBatchFailedJobExitsNonZero(t *testing.T) {
	dir, _ := setup(t, "P00000.7", "P00001-bad.7")
	stdout, stderr, err := runBatch(t, "--opts", filepath.Join(dir, "recon.opts"),
		"--glob", filepath.Join(dir, "raw", "*.7"), "--output", filepath.Join(dir, "results"))
	if !errors.Is(err, errJobsFailed) {
		t.Fatalf("batch with a failing job: err = %v, want errJobsFailed\nstdout:\n%s", err, stdout)
	}
	rows := parseRows(t, stdout)
	if r := rows["P00000.7"]; r.state != "succeeded" {
		t.Errorf("good file: state %q, want succeeded:\n%s", r.state, stdout)
	}
	if r := rows["P00001-bad.7"]; r.state != "failed" || r.results != "0" {
		t.Errorf("bad file: state %q with %s result(s), want failed with 0:\n%s", r.state, r.results, stdout)
	}
	if !strings.Contains(stderr, "cannot reconstruct P00001-bad.7") {
		t.Errorf("stderr does not show the script's error:\n%s", stderr)
	}
}

func TestBatchUnreachableServer(t *testing.T) {
	dir, srv := setup(t, "P00000.7")
	srv.Stop(t)
	stdout, _, err := runBatch(t, "--opts", filepath.Join(dir, "recon.opts"),
		"--glob", filepath.Join(dir, "raw", "*"), "--output", filepath.Join(dir, "results"))
	if !errors.Is(err, errJobsFailed) {
		t.Fatalf("server down: err = %v, want errJobsFailed", err)
	}
	if r := parseRows(t, stdout)["P00000.7"]; r.state != "error" || r.jobID != "-" {
		t.Errorf("server down: row %+v, want state error without a job id:\n%s", r, stdout)
	}
}

func TestBatchUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--glob", "*.7", "--concurrency", "0"},
		{"--glob", "*.7", "--option", "novalue"},
		{"--glob", "*.7", "--option", "a=1", "--option", "a=2"},
		{"--glob", "[", "--opts", filepath.Join(dir, "recon.opts")},
		{"--glob", "*.7", "extra"},
	} {
		_, _, err := runBatch(t, args...)
		if !errors.As(err, new(usageError)) {
			t.Errorf("batch %q: err = %v, want a usage error", args, err)
		}
	}
	_, _, err := runBatch(t, "--glob", filepath.Join(dir, "*.none"))
	if err == nil || !strings.Contains(err.Error(), "no file matches") {
		t.Errorf("no matches: err = %v, want 'no file matches'", err)
	}
}

// TestBatchConcurrencyBounded holds every job's script until the test
// releases it: with --concurrency 2 the server (which would run eight at
// once) must hold exactly two jobs of the five while they are held, and
// all five must finish once released.
func TestBatchConcurrencyBounded(t *testing.T) {
	names := []string{"P00000.7", "P00001.7", "P00002.7", "P00003.7", "P00004.7"}
	release := filepath.Join(t.TempDir(), "release")
	script := fmt.Sprintf(`#!/bin/sh
i=0
while [ ! -e %q ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
for f in "$1"/*; do echo held > "$3/$(basename "$f").out"; done
`, release)
	srv := servertest.Start(t, servertest.Options{
		Script: script,
		Extra: map[string]string{"MAX_CPU_LOAD_PERCENT": "100", "MIN_AVAILABLE_MEMORY_MB": "0",
			"MAX_CONCURRENT_JOBS": "8"},
	})
	dir := t.TempDir()
	host, port, err := net.SplitHostPort(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	opts := filepath.Join(dir, "recon.opts")
	if err := os.WriteFile(opts, []byte(fmt.Sprintf("SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n", host, port, srv.Key)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("raw "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		stdout, stderr string
		err            error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out, errb bytes.Buffer
		err := run(ctx, []string{"--opts", opts, "--glob", filepath.Join(dir, "*.7"),
			"--concurrency", "2", "--output", filepath.Join(dir, "results")}, &out, &errb)
		done <- result{out.String(), errb.String(), err}
	}()
	c := srv.Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var jobs []client.Job
	servertest.Eventually(t, 20*time.Second, "two jobs running", func() bool {
		jobs, err = c.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, j := range jobs {
			if j.State == "running" {
				running++
			}
		}
		return running >= 2
	})
	// Two jobs in flight at once (the batch does use its workers) and no
	// more: the others wait for a worker.
	if jobs, err = c.Queue(ctx); err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 {
		t.Errorf("the server holds %d jobs while two are held, want 2 (--concurrency 2)", len(jobs))
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("batch: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	rows := parseRows(t, r.stdout)
	for _, n := range names {
		if rows[n].state != "succeeded" {
			t.Errorf("%s: state %q, want succeeded:\n%s", n, rows[n].state, r.stdout)
		}
	}
	// Each worker keeps one connection and has one job in flight at a
	// time: two workers, two sessions (besides the test's own).
	log, err := os.ReadFile(srv.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), `"msg":"session authenticated"`) - 1; n != 2 {
		t.Errorf("the batch opened %d sessions, want 2 (--concurrency 2)", n)
	}
}
