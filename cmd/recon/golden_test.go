package main

// Golden files of what the client and admin commands print, text and
// JSON: each command runs in-process (run, as main calls it) against a
// real server from internal/servertest, and its exit code, standard output
// and standard error are compared with testdata/golden/<name>.golden.
//
//	go test ./cmd/recon/ -run TestGolden -update   # rewrite them
//
// Volatile parts are normalised before the comparison (and in the files),
// in this order, by normaliseGolden:
//   - each job id the test made → JOB1, JOB2, … (in the order they were
//     made); any other job id → JOB?;
//   - the test's temporary directory → $DIR, the server's → $SERVERDIR;
//   - a submission id derived from files (cli-<64 hex>) → cli-SUBMISSION,
//     a random one (c-<32 hex>, --new) → c-RANDOM;
//   - a date and time (2006-01-02 15:04:05, or RFC 3339 with fraction and
//     zone) → TIME;
//   - 127.0.0.1:<port> → 127.0.0.1:PORT;
//   - a duration of uptime (text "uptime  1m2s", JSON "uptime_seconds": 62)
//     → UPTIME / 0;
//   - what the machine measures: CPU percent, available memory, free disk
//     bytes and the space limits derived from it (text lines cpu, memory,
//     disk, "at most …"; JSON cpu_percent, available_memory_mb,
//     free_bytes, max_*_bytes*) → N or 0;
//   - the job states a waiting submit or fetch reports on standard error
//     ("job JOB1: running"): which of them it sees depends on timing;
//   - admin logs: each record is cut to its "level", "msg" and "job_id"
//     (the rest, times, connection ids, durations, is volatile).
//
// Replacing an id or a time by a shorter word shifts the columns of a
// table in the file; the columns of the real output are aligned.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenScript copies each input to <name>.out, except hold.dat, on which
// it waits until it is cancelled.
const goldenScript = `#!/bin/sh
set -eu
in="$1"; out="$3"
if [ -e "$in/hold.dat" ]; then
  while :; do sleep 1; done
fi
for f in "$in"/*; do
  cp "$f" "$out/$(basename "$f").out"
done
`

type goldenRun struct {
	t      *testing.T
	dir    string
	srvDir string // the server's directory: admin status shows its settings
	opts   string
	ids    []string // job ids in the order they were made
}

// recon runs one command line in-process and returns its exit code and
// output.
func (g *goldenRun) recon(args ...string) (int, string, string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// check runs args and compares what it printed with the golden file name.
func (g *goldenRun) check(name string, args ...string) (int, string) {
	g.t.Helper()
	return g.checkWith(name, nil, args...)
}

// checkWith is check with edit applied to standard output first.
func (g *goldenRun) checkWith(name string, edit func(string) string, args ...string) (int, string) {
	g.t.Helper()
	code, out, errOut := g.recon(args...)
	if edit != nil {
		out = edit(out)
	}
	display := strings.ReplaceAll(strings.Join(args, " "), g.opts, filepath.Base(g.opts))
	got := g.normalise(fmt.Sprintf("$ recon %s\nexit %d\n--- stdout\n%s--- stderr\n%s", display, code, out, errOut))
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			g.t.Fatal(err)
		}
		return code, out
	}
	want, err := os.ReadFile(path)
	if err != nil {
		g.t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		g.t.Errorf("recon %s: output differs from %s (-want +got):\n%s", display, path, diff)
	}
	return code, out
}

// otherJobIDRE matches a job id the test did not learn (jobs.NewID: 26
// characters of base32, lower case).
var otherJobIDRE = regexp.MustCompile(`\b[a-z2-7]{26}\b`)

var goldenRules = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`cli-[0-9a-f]{64}`), "cli-SUBMISSION"},
	{regexp.MustCompile(`"c-[0-9a-f]{32}"`), `"c-RANDOM"`},
	{regexp.MustCompile(`\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?`), "TIME"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`(?m)^uptime( +)\S+$`), "uptime${1}UPTIME"},
	{regexp.MustCompile(`"uptime_seconds": [0-9.e+-]+`), `"uptime_seconds": 0`},
	{regexp.MustCompile(`(?m)^cpu( +)\d+%`), "cpu${1}N%"},
	{regexp.MustCompile(`(?m)^memory( +)\d+ MB available`), "memory${1}N MB available"},
	{regexp.MustCompile(`(?m)^(disk .*): [0-9.]+ [KMGTPE]?i?B free$`), "$1: N free"},
	{regexp.MustCompile(`"(cpu_percent|available_memory_mb|free_bytes|max_reserved_bytes_per_client|max_kept_upload_bytes_per_client|max_kept_upload_bytes)": [0-9.e+-]+`), `"$1": 0`},
	{regexp.MustCompile(`at most [0-9.]+ [KMGTPE]?i?B`), "at most N"},
	{regexp.MustCompile(`(?m)^job JOB\d+: .*\n`), ""},
}

func (g *goldenRun) normalise(s string) string {
	for i, id := range g.ids {
		s = strings.ReplaceAll(s, id, fmt.Sprintf("JOB%d", i+1))
	}
	s = strings.ReplaceAll(s, g.dir, "$DIR")
	s = strings.ReplaceAll(s, g.srvDir, "$SERVERDIR")
	s = otherJobIDRE.ReplaceAllString(s, "JOB?")
	for _, r := range goldenRules {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}

// TestGolden runs every client and admin command, text and JSON, against
// one server, in an order that gives each something to show.
func TestGolden(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{Script: goldenScript})
	dir := t.TempDir()
	opts := filepath.Join(dir, "cli.opts")
	writeCLIOpts(t, opts, srv, srv.Addr().String())
	g := &goldenRun{t: t, dir: dir, srvDir: srv.Dir, opts: opts}
	for i, name := range []string{"a.dat", "b.dat", "hold.dat"} {
		writeFile(t, filepath.Join(dir, name), strings.Repeat(string(rune('a'+i)), 1000*(i+1)), 0o644)
	}
	a, b, hold := filepath.Join(dir, "a.dat"), filepath.Join(dir, "b.dat"), filepath.Join(dir, "hold.dat")
	jobOf := func(out string) string {
		var j struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(out), &j); err != nil || j.JobID == "" {
			t.Fatalf("no job_id in %q: %v", out, err)
		}
		return j.JobID
	}

	g.check("status", "status", "--opts", opts)
	g.check("status-json", "status", "--opts", opts, "--json")
	g.check("queue-empty", "queue", "--opts", opts)

	// A job: submit, then the same submit again, and fetch once more.
	code, out, _ := g.recon("submit", "--opts", opts, "--no-wait", "--json", a, "--option", "method=pics")
	if code != 0 {
		t.Fatalf("submit a.dat: exit %d", code)
	}
	g.ids = append(g.ids, jobOf(out))
	g.check("submit", "submit", "--opts", opts, "--output", filepath.Join(dir, "out-a"), a, "--option", "method=pics")
	// The server removes delivered results in the background.
	servertest.Eventually(t, 30*time.Second, "results of a.dat removed", func() bool {
		_, out, _ := g.recon("status", "--opts", opts, "--json", g.ids[0])
		return strings.Contains(out, `"results_gone": true`)
	})
	g.check("submit-again", "submit", "--opts", opts, a, "--option", "method=pics")
	g.check("fetch-nothing", "fetch", "--opts", opts, g.ids[0])
	g.check("fetch-nothing-json", "fetch", "--opts", opts, "--json", g.ids[0])
	g.check("status-job", "status", "--opts", opts, g.ids[0])
	g.check("status-job-json", "status", "--opts", opts, "--json", g.ids[0])

	// A second job, through submit --json.
	code, out, _ = g.recon("submit", "--opts", opts, "--no-wait", "--json", b)
	if code != 0 {
		t.Fatalf("submit b.dat: exit %d", code)
	}
	g.ids = append(g.ids, jobOf(out))
	g.check("fetch-json", "fetch", "--opts", opts, "--json", "--output", filepath.Join(dir, "out-b"), g.ids[1])

	// A job that runs until it is cancelled.
	code, out, _ = g.recon("submit", "--opts", opts, "--no-wait", "--json", hold)
	if code != 0 {
		t.Fatalf("submit hold.dat: exit %d", code)
	}
	g.ids = append(g.ids, jobOf(out))
	servertest.Eventually(t, 30*time.Second, "hold.dat running", func() bool {
		_, out, _ := g.recon("status", "--opts", opts, "--json", g.ids[2])
		return strings.Contains(out, `"state": "running"`)
	})
	g.check("queue", "queue", "--opts", opts)
	g.check("queue-json", "queue", "--opts", opts, "--json")
	g.check("admin-queue", "admin", "--opts", opts, "queue")
	g.check("admin-queue-json", "admin", "--opts", opts, "queue", "--json")
	g.check("admin-cancel", "admin", "--opts", opts, "cancel", g.ids[2])
	g.check("admin-cancel-again-json", "admin", "--opts", opts, "cancel", "--json", g.ids[2])
	servertest.Eventually(t, 30*time.Second, "workers idle", func() bool {
		_, out, _ := g.recon("admin", "--opts", opts, "workers", "--json")
		return !strings.Contains(out, `"busy"`) && !strings.Contains(out, `"stopping"`)
	})
	g.check("admin-workers", "admin", "--opts", opts, "workers")
	g.check("admin-workers-json", "admin", "--opts", opts, "workers", "--json")
	g.check("admin-setmaxjobs", "admin", "--opts", opts, "setmaxjobs", "3")
	g.check("admin-setmaxjobs-json", "admin", "--opts", opts, "setmaxjobs", "--json", "2")
	g.check("admin-status", "admin", "--opts", opts, "status")
	g.check("admin-status-json", "admin", "--opts", opts, "status", "--json")
	logArgs := []string{"admin", "--opts", opts, "logs", "--lines", "100", "--jobid", g.ids[1]}
	servertest.Eventually(t, 30*time.Second, "the log of JOB2's delivery", func() bool {
		_, out, _ := g.recon(logArgs...)
		return strings.Contains(out, `"results delivered"`)
	})
	g.checkWith("admin-logs", logLines, logArgs...)
	g.checkWith("admin-logs-json", logDocument, append(logArgs, "--json")...)
	g.check("submit-no-wait-new", "submit", "--opts", opts, "--no-wait", "--new", b)
	// Its job leaves the queue before the next one is queued behind it.
	servertest.Eventually(t, 30*time.Second, "no job queued", func() bool {
		_, out, _ := g.recon("queue", "--opts", opts, "--json")
		return !strings.Contains(out, `"state": "queued"`)
	})
	g.check("submit-no-wait-new-json", "submit", "--opts", opts, "--no-wait", "--new", "--json", b)
	g.check("submit-json", "submit", "--opts", opts, "--json", "--output", filepath.Join(dir, "out-b2"), "--option", "method=sense", b)
}

// writeCLIOpts writes a config for the client and admin commands of srv:
// its client port at addr (the server's, or a proxy's), its admin port,
// both keys, and downloads beside the file.
func writeCLIOpts(t *testing.T, path string, srv *servertest.Server, addr string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	ahost, aport, _ := strings.Cut(srv.AdminAddr().String(), ":")
	writeFile(t, path, fmt.Sprintf("SERVER_HOSTNAME = %s\nSERVER_PORT = %s\nSHARED_KEY = %s\n"+
		"SERVER_ADMIN_HOSTNAME = %s\nSERVER_ADMIN_PORT = %s\nSERVER_ADMIN_SHARED_KEY = %s\nCLIENT_DOWNLOAD_DIR = %s\n",
		host, port, srv.Key, ahost, aport, srv.AdminKey, filepath.Join(filepath.Dir(path), "downloads")), 0o600)
}

// goldenLogRecord is what the golden files keep of a log record.
type goldenLogRecord struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	JobID string `json:"job_id,omitempty"`
}

// logLines cuts each line of admin logs (a JSON record) to a goldenLogRecord.
func logLines(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r goldenLogRecord
		if json.Unmarshal([]byte(l), &r) != nil {
			b.WriteString(l + "\n")
			continue
		}
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteString("\n")
	}
	return b.String()
}

// logDocument cuts each record of admin logs --json to a goldenLogRecord.
func logDocument(out string) string {
	var doc struct {
		Records []goldenLogRecord `json:"records"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return out
	}
	var b strings.Builder
	printJSON(&b, doc)
	return b.String()
}

// relayGoldenRules normalise what relay-admin prints besides goldenRules:
// the backend's address → BACKEND; its latency and the time of its last
// check (text: a duration and a time of day; JSON: latency_seconds) →
// LATENCY, TIME, 0; the relay's version (the binary's build) → VERSION.
var relayGoldenRules = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\b\d{2}:\d{2}:\d{2}\b`), "TIME"},
	{regexp.MustCompile(`\b[0-9.]+(µs|ms|s)\b`), "LATENCY"},
	{regexp.MustCompile(`"latency_seconds": [0-9.e+-]+`), `"latency_seconds": 0`},
	{regexp.MustCompile(`"version": "devel[^"]*"`), `"version": "VERSION"`},
	{regexp.MustCompile(`(?m)^relay version( +)\S+$`), "relay version${1}VERSION"},
	// The latency's width moves the table's later columns.
	{regexp.MustCompile(`LATENCY +TIME`), "LATENCY  TIME"},
}

// TestGoldenRelayAdmin: relay-admin's commands, text and JSON, in-process
// against a real relay (recon relay) in front of one server.
func TestGoldenRelayAdmin(t *testing.T) {
	key := keys.MustGenerate().Encode()
	srv := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
	dir := t.TempDir()
	_, adminKey := relayOpts(t, dir, []string{srv.Addr().String()}, key)
	rp := startRelayProc(t, dir, "relay.opts")
	opts := filepath.Join(dir, "admin.opts")
	relayAdminOpts(t, opts, rp.adminAddr, adminKey)
	g := &goldenRun{t: t, dir: dir, srvDir: srv.Dir, opts: opts}
	servertest.Eventually(t, 30*time.Second, "the backend up", func() bool {
		_, out, _ := g.recon("relay-admin", "--opts", opts, "backends", "--json")
		return strings.Contains(out, `"healthy": true`) && strings.Contains(out, `"last_check"`)
	})
	check := func(name string, args ...string) {
		t.Helper()
		g.checkWith(name, func(out string) string {
			out = strings.ReplaceAll(out, srv.Addr().String(), "BACKEND")
			for _, r := range relayGoldenRules {
				out = r.re.ReplaceAllString(out, r.with)
			}
			return out
		}, args...)
	}
	for _, sub := range []string{"status", "backends", "clients"} {
		check("relay-admin-"+sub, "relay-admin", "--opts", opts, sub)
		check("relay-admin-"+sub+"-json", "relay-admin", "--opts", opts, sub, "--json")
	}
}
