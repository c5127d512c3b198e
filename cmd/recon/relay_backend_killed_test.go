package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// relayBackends is `recon relay-admin backends --json`, each backend as
// its JSON object.
func relayBackends(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	r := runRecon(t, dir, "relay-admin", "backends", "--opts", "admin.opts", "--json")
	var bs struct {
		Backends []map[string]any `json:"backends"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &bs) != nil {
		t.Fatalf("relay-admin backends --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	out := map[string]map[string]any{}
	for _, b := range bs.Backends {
		a, _ := b["address"].(string)
		out[a] = b
	}
	return out
}

// lineOf returns the first line of out that contains s.
func lineOf(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// heldScript holds a job whose input name contains "hold" until the file
// release-<job id> appears in dir, then copies the inputs; other jobs run
// at once. A script whose server was killed stops holding (its parent is
// gone), so no script outlives the test.
func heldScript(t *testing.T, dir string) string {
	return servertest.WriteScript(t, dir, "held.sh", `#!/bin/sh
set -eu
d="`+dir+`"
for f in "$1"/*; do
  case "$f" in *hold*)
    while [ ! -e "$d/release-$RECON_JOB_ID" ]; do kill -0 $PPID 2>/dev/null || exit 1; sleep 0.02; done ;;
  esac
done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
}

// TestRelayBackendKilled runs three `recon server` processes behind a
// `recon relay` process, with jobs on each, and kills one backend with
// SIGKILL while one of its jobs runs and another waits in its queue:
//   - the relay marks it down within two health intervals (its own record);
//   - `relay-admin backends` shows it down with its last error;
//   - new jobs go to the other backends and succeed;
//   - status and fetch of its jobs fail clearly, naming it as down, and
//     queue lists the others' jobs, each with its backend;
//   - restarted on the same config and state, it is up again, and its
//     jobs (the running and the queued one) are reachable, run and are
//     fetched through the relay.
func TestRelayBackendKilled(t *testing.T) {
	const interval = time.Second // see checkMarkedDownInLog
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	base := t.TempDir()
	key, gate, servers, dirs, addrs := heldBackends(t, base, 3, "MAX_CONCURRENT_JOBS = 1")
	rdir := filepath.Join(base, "relay")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		t.Fatal(err)
	}
	clientKey, adminKey := relayOpts(t, rdir, addrs, key)
	setOpt(t, filepath.Join(rdir, "relay.opts"), "BACKEND_HEALTH_INTERVAL_SECONDS", "1")
	rp := startRelayProc(t, rdir, "relay.opts")
	clientOpts(t, filepath.Join(rdir, "client.opts"), rp.clientAddr, clientKey)
	relayAdminOpts(t, filepath.Join(rdir, "admin.opts"), rp.adminAddr, adminKey)
	relayLog := filepath.Join(rdir, "relay.log")
	defer func() {
		if t.Failed() {
			t.Logf("relay stderr:\n%s", lastLines(rp.output(), 30))
		}
	}()
	c, err := client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Two held jobs on each backend: an idle relay spreads six submissions
	// two by two (least loaded, ties in turn).
	inputs := map[string]string{} // job id → input path
	on := map[string][]string{}   // backend → its job ids, in order
	for i := range 6 {
		in := filepath.Join(base, fmt.Sprintf("hold%d.7", i))
		writeFile(t, in, strings.Repeat(fmt.Sprintf("scan %d ", i), 1000+i), 0o644)
		job, err := c.Submit(ctx, []string{in}, nil)
		if err != nil {
			t.Fatalf("submit %s: %v", in, err)
		}
		inputs[job.JobID] = in
		on[job.Backend] = append(on[job.Backend], job.JobID)
	}
	for _, a := range addrs {
		if len(on[a]) != 2 {
			t.Fatalf("jobs per backend %v: want two on each of %v", on, addrs)
		}
	}
	victim := addrs[0]
	running, queued := on[victim][0], on[victim][1]
	state := func(id string) client.JobState {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatalf("status of %s: %v", id, err)
		}
		return j.State
	}
	servertest.Eventually(t, 30*time.Second, "the victim's first job runs", func() bool { return state(running) == "running" })
	if s := state(queued); s != "queued" {
		t.Fatalf("the victim's second job is %s, want queued", s)
	}
	// The other backends' jobs finish.
	for _, a := range addrs[1:] {
		for _, id := range on[a] {
			writeFile(t, filepath.Join(gate, "release-"+id), "", 0o644)
		}
	}
	for _, a := range addrs[1:] {
		for _, id := range on[a] {
			if j, err := c.Wait(ctx, id, nil); err != nil || j.State != "succeeded" {
				t.Fatalf("job %s on %s: %+v, %v", id, a, j, err)
			}
		}
	}

	// SIGKILL, in the middle of the running job.
	killed := time.Now()
	servers[0].kill9(t)
	servertest.Eventually(t, 20*time.Second, "the relay marks the killed backend down", func() bool {
		return relayBackends(t, rdir)[victim]["healthy"] == false
	})
	checkMarkedDownInLog(t, relayLog, victim, killed, interval)

	// relay-admin shows it down, with its last error.
	bs := relayBackends(t, rdir)
	for a, b := range bs {
		keys := []string{"address", "healthy", "last_check", "queued", "running", "jobs_placed", "last_error"}
		if a == victim {
			// last_error_at is left out while a backend has never failed;
			// a backend that is down has it.
			keys = append(keys, "last_error_at")
		} else {
			keys = append(keys, "latency_seconds", "version")
		}
		for _, k := range keys {
			if _, ok := b[k]; !ok {
				t.Errorf("relay-admin backends --json: backend %s has no %s: %v", a, k, b)
			}
		}
	}
	lastErr, _ := bs[victim]["last_error"].(string)
	if lastErr == "" {
		t.Errorf("relay-admin backends --json: the killed backend has no last_error: %v", bs[victim])
	}
	r := runRecon(t, rdir, "relay-admin", "backends", "--opts", "admin.opts")
	if line := lineOf(r.stdout, victim); r.code != 0 || !strings.Contains(line, " down ") || lastErr == "" || !strings.Contains(line, lastErr) {
		t.Errorf("relay-admin backends: exit %d, line of %s %q; want it down with its last error %q\n%s", r.code, victim, line, lastErr, r.stdout)
	}
	for _, a := range addrs[1:] {
		if line := lineOf(r.stdout, a); !strings.Contains(line, " up ") {
			t.Errorf("relay-admin backends: line of %s %q, want up", a, line)
		}
	}

	// New jobs go to the others and succeed.
	for i := range 3 {
		name := fmt.Sprintf("new%d.7", i)
		writeFile(t, filepath.Join(rdir, name), strings.Repeat("new ", 2000+i), 0o644)
		r := runRecon(t, rdir, "submit", "--opts", "client.opts", "--json", "--output", "out-"+name, name)
		var res struct {
			State   string                  `json:"state"`
			Backend string                  `json:"backend"`
			Results []struct{ Path string } `json:"results"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
			t.Fatalf("submit %s with a backend killed: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
		}
		if res.State != "succeeded" || res.Backend == victim || !slices.Contains(addrs, res.Backend) ||
			len(res.Results) != 1 || sha(t, res.Results[0].Path) != sha(t, filepath.Join(rdir, name)) {
			t.Errorf("submit %s with %s killed: %+v; want it succeeded on another backend, result = input", name, victim, res)
		}
	}

	// Its jobs: a clear error naming the backend as down.
	for _, id := range []string{running, queued} {
		for _, args := range [][]string{
			{"status", "--opts", "client.opts", id},
			{"fetch", "--opts", "client.opts", "--output", "out-" + id, id},
		} {
			r := runRecon(t, rdir, args...)
			if r.code == 0 || !strings.Contains(r.stderr, victim) || !strings.Contains(r.stderr, "down") || !strings.Contains(r.stderr, id) {
				t.Errorf("recon %v with its backend killed: exit %d, stderr %q; want an error naming job and backend as down", args, r.code, r.stderr)
			}
		}
	}
	// queue lists the others' jobs, each with its backend, and names the
	// killed one.
	r = runRecon(t, rdir, "queue", "--opts", "client.opts", "--json")
	var q struct {
		Jobs []struct {
			JobID   string `json:"job_id"`
			Backend string `json:"backend"`
		} `json:"jobs"`
		Unavailable []string `json:"unavailable"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &q) != nil {
		t.Fatalf("queue --json with a backend killed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !slices.Equal(q.Unavailable, []string{victim}) {
		t.Errorf("queue --json: unavailable %v, want [%s]", q.Unavailable, victim)
	}
	listed := map[string]string{}
	for _, j := range q.Jobs {
		listed[j.JobID] = j.Backend
	}
	for _, a := range addrs[1:] {
		for _, id := range on[a] {
			if listed[id] != a {
				t.Errorf("queue --json: job %s labelled %q, want %s", id, listed[id], a)
			}
		}
	}

	// Restarted on the same config and state: up again, its jobs back.
	servers[0] = startServer(t, dirs[0], "recon.opts")
	if servers[0].clientAddr != victim {
		t.Fatalf("restarted backend listens on %s, want %s", servers[0].clientAddr, victim)
	}
	servertest.Eventually(t, 20*time.Second, "the relay marks the restarted backend up", func() bool {
		return relayBackends(t, rdir)[victim]["healthy"] == true
	})
	if b := relayBackends(t, rdir)[victim]; b["last_error"] == nil || b["last_error_at"] == nil {
		t.Errorf("relay-admin backends --json: the restarted backend's last error is gone: %v; want it kept after recovery", b)
	}
	for id, want := range map[string]string{running: "running", queued: "queued"} {
		r := runRecon(t, rdir, "status", "--opts", "client.opts", "--json", id)
		var j struct {
			JobID   string `json:"job_id"`
			State   string `json:"state"`
			Backend string `json:"backend"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || j.JobID != id || j.Backend != victim || (j.State != "running" && j.State != "queued") {
			t.Fatalf("status %s after the backend's restart: exit %d\n%s%s", id, r.code, r.stdout, r.stderr)
		}
		t.Logf("job %s (%s when killed) is %s after the restart", id, want, j.State)
	}
	for _, id := range []string{running, queued} {
		writeFile(t, filepath.Join(gate, "release-"+id), "", 0o644)
	}
	for _, id := range []string{running, queued} {
		out := filepath.Join(rdir, "out-"+id)
		r := runRecon(t, rdir, "fetch", "--opts", "client.opts", "--json", "--output", out, id)
		if r.code != 0 {
			t.Fatalf("fetch %s after the backend's restart: exit %d\n%s%s", id, r.code, r.stdout, r.stderr)
		}
		got := filepath.Join(out, filepath.Base(inputs[id])+".out")
		if sha(t, got) != sha(t, inputs[id]) {
			t.Errorf("job %s: result differs from its input", id)
		}
	}
}

// checkMarkedDownInLog checks that the relay, whose JSON log is logPath,
// marked the backend at addr down within two health intervals of gone,
// the moment just before it was killed. The time is the relay's own: that
// of its "backend down" record, written as it marks the backend down.
//
// This is the requirement itself (issue #5: "A backend killed: marked down
// within two health intervals"), not a performance figure. The relay
// checks each backend every interval. A killed process refuses
// connections at once (and resets those it had), so the check in progress
// at the kill ends within milliseconds, and the next one, at most an
// interval later, fails within milliseconds: the backend is marked down
// about one interval after the kill, which leaves most of an interval for
// a busy machine. (A check's timeout, at least 3 s, only bounds a frozen
// or unreachable backend.) Hence an interval of 1 s: with a much shorter
// one, a busy machine's delays alone could exceed two intervals.
func checkMarkedDownInLog(t *testing.T, logPath, addr string, gone time.Time, interval time.Duration) {
	t.Helper()
	var at time.Time
	servertest.Eventually(t, 10*time.Second, "the relay logs the backend down", func() bool {
		for _, rec := range servertest.LogRecords(t, logPath, "backend down") {
			ts, _ := rec["time"].(string)
			tm, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				t.Fatalf("relay log: \"backend down\" with time %q: %v", ts, err)
			}
			if rec["backend"] == addr && !tm.Before(gone) {
				at = tm
				return true
			}
		}
		return false
	})
	d := at.Sub(gone)
	t.Logf("the relay marked %s down %v after the kill (health interval %v)", addr, d.Round(time.Millisecond), interval)
	if d > 2*interval {
		t.Errorf("the relay marked %s down %v after the kill; the requirement is within two health intervals (%v)", addr, d, 2*interval)
	}
}

// TestRelayBackendKilledMidUpload kills (SIGKILL) the `recon server`
// receiving an upload through a `recon relay`: the caller of Submit sees
// no error; Submit reconnects once and the relay places the submission on
// the other backend, which takes the files from the start. When the killed
// backend is back (with the part it kept), the submission is still one
// job, and a retry with its submission id returns that job.
func TestRelayBackendKilledMidUpload(t *testing.T) {
	const (
		size = 64 << 20
		sid  = "killed-mid-upload"
	)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	base := t.TempDir()
	key, gate, servers, dirs, addrs := heldBackends(t, base, 2)
	rdir := filepath.Join(base, "relay")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		t.Fatal(err)
	}
	clientKey, _ := relayOpts(t, rdir, addrs, key)
	rp := startRelayProc(t, rdir, "relay.opts")
	c, err := client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A held job keeps one backend loaded, so the upload goes to the
	// other (least loaded).
	hold := filepath.Join(base, "hold.7")
	writeFile(t, hold, "held", 0o644)
	held, err := c.Submit(ctx, []string{hold}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(filepath.Join(gate, "release-"+held.JobID), nil, 0o644) })
	servertest.Eventually(t, 20*time.Second, "the held job runs", func() bool {
		j, err := c.Job(ctx, held.JobID)
		return err == nil && j.State == "running"
	})
	victim := slices.IndexFunc(addrs, func(a string) bool { return a != held.Backend })

	in := filepath.Join(base, "scan.7")
	writeRandomFile(t, in, size, 11)
	var once sync.Once
	var reconnects []error
	killed := false
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{
		SubmissionID:   sid,
		ReconnectDelay: 10 * time.Millisecond,
		OnReconnect:    func(_ int, err error) { reconnects = append(reconnects, err) },
		// Progress runs in the send path: killing at its first call stops
		// the backend well before the last byte.
		Progress: func(done, total int64) {
			if done > 0 && done < total {
				once.Do(func() {
					servers[victim].cmd.Process.Kill()
					killed = true
				})
			}
		},
	})
	if !killed {
		t.Fatal("the backend was not killed during the upload")
	}
	if err != nil {
		t.Fatalf("submit with its backend killed mid-upload: %v; want it placed on the other backend without an error", err)
	}
	t.Logf("job %s on %s; Submit reconnected after %v", job.JobID, job.Backend, reconnects)
	if job.Backend != held.Backend {
		t.Errorf("job placed on %s, want the other backend %s (killed: %s)", job.Backend, held.Backend, addrs[victim])
	}
	if len(reconnects) != 1 {
		t.Errorf("Submit reconnected %d times (%v), want once", len(reconnects), reconnects)
	}
	writeFile(t, filepath.Join(gate, "release-"+held.JobID), "", 0o644) // its backend may run one job at a time
	if j, err := c.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("wait: %+v, %v", j, err)
	}
	out := filepath.Join(base, "out")
	if _, files, err := c.Fetch(ctx, job.JobID, out, nil); err != nil || len(files) != 1 || sha(t, files[0].Path) != sha(t, in) {
		t.Fatalf("fetch: %+v, %v", files, err)
	}

	// The killed backend comes back with what it kept: still one job, and
	// a retry returns it.
	<-servers[victim].done
	servers[victim].done <- nil
	servers[victim] = startServer(t, dirs[victim], "recon.opts")
	again, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid})
	if err != nil || again.JobID != job.JobID || again.Backend != job.Backend {
		t.Errorf("retry of %s with the killed backend back: %+v, %v; want job %s on %s", sid, again, err, job.JobID, job.Backend)
	}
	n := 0
	for _, a := range addrs {
		bc, err := client.Dial(ctx, client.Config{Address: a, Key: key, DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("dial backend %s: %v", a, err)
		}
		q, err := bc.Queue(ctx)
		bc.Close()
		if err != nil {
			t.Fatalf("queue of %s: %v", a, err)
		}
		for _, j := range q {
			if j.SubmissionID == sid {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("submission %s is %d jobs on the backends, want 1", sid, n)
	}
}

// heldBackends starts n real backends under base that share one client key
// and run a script held until a file appears in gate. Each keeps its
// client port across a restart. extra lines go into every recon.opts.
func heldBackends(t *testing.T, base string, n int, extra ...string) (key, gate string, servers []*serverProc, dirs, addrs []string) {
	t.Helper()
	key = keys.MustGenerate().Encode()
	gate = filepath.Join(base, "gate")
	if err := os.Mkdir(gate, 0o700); err != nil {
		t.Fatal(err)
	}
	script := heldScript(t, gate)
	for i := range n {
		d := filepath.Join(base, fmt.Sprintf("backend%d", i))
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		serverOpts(t, d, script, append([]string{"SHARED_KEY = " + key}, extra...)...)
		s := startServer(t, d, "recon.opts")
		// The same address after a restart.
		_, port, _ := strings.Cut(s.clientAddr, ":")
		setOpt(t, filepath.Join(d, "recon.opts"), "SERVER_PORT", port)
		servers, dirs, addrs = append(servers, s), append(dirs, d), append(addrs, s.clientAddr)
	}
	return key, gate, servers, dirs, addrs
}
