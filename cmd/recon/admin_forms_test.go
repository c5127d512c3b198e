package main

// recon admin's commands in their human and --json forms, cancelling a
// script that ignores SIGTERM, and the admin port's address allow-list.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// holdScript records its pid, holds a job whose input file name contains
// "hold" until DIR/release-<job id> exists, and copies each input to
// <name>.out.
func holdScript(t *testing.T, dir string) string {
	return servertest.WriteScript(t, dir, "hold.sh", `#!/bin/sh
set -eu
d="`+dir+`"
echo $$ > "$d/pid-$RECON_JOB_ID"
for f in "$1"/*; do
  case "$f" in *hold*) while [ ! -e "$d/release-$RECON_JOB_ID" ]; do sleep 0.05; done ;; esac
done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
}

// lineWith returns the first line of out that holds every one of subs.
func lineWith(out string, subs ...string) string {
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return l
		}
	}
	return ""
}

type adminJob struct {
	JobID       string     `json:"job_id"`
	State       string     `json:"state"`
	Position    int        `json:"position"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	Files       []struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
		BLAKE3 string `json:"blake3"`
	} `json:"files"`
	Attempts   int    `json:"attempts"`
	ClientAddr string `json:"client_addr"`
}

// TestAdminBothForms runs every admin command in its human and --json
// forms against one server with a finished, a running and a queued job,
// and checks what they say.
func TestAdminBothForms(t *testing.T) {
	dir := t.TempDir()
	begin := time.Now()
	key := serverOpts(t, dir, holdScript(t, dir), "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)

	done := submitFile(t, dir, "client.opts", "done.7", "hello")
	waitState(t, dir, "client.opts", done, "succeeded")
	running := submitFile(t, dir, "client.opts", "hold.7", "held data")
	servertest.Eventually(t, 20*time.Second, "the held job runs", func() bool {
		_, err := os.Stat(filepath.Join(dir, "pid-"+running))
		return err == nil
	})
	queued := submitFile(t, dir, "client.opts", "queued.7", "q")

	// Filled by admin status --json in the status and setmaxjobs steps.
	var st struct {
		Version       string         `json:"version"`
		UptimeSeconds *float64       `json:"uptime_seconds"`
		Jobs          map[string]int `json:"jobs"`
		MaxWorkers    int            `json:"max_workers"`
		Workers       struct {
			MaxJobs int `json:"max_jobs"`
			Workers []struct {
				State string `json:"state"`
			} `json:"workers"`
			Paused *bool `json:"paused"`
		} `json:"workers"`
		Resources struct {
			CPUPercent           *float64  `json:"cpu_percent"`
			MaxCPUPercent        int       `json:"max_cpu_percent"`
			AvailableMemoryMB    int64     `json:"available_memory_mb"`
			MinAvailableMemoryMB *int64    `json:"min_available_memory_mb"`
			CheckedAt            time.Time `json:"checked_at"`
			Error                string    `json:"error"`
		} `json:"resources"`
		Disks []struct {
			Key       string `json:"key"`
			Path      string `json:"path"`
			FreeBytes int64  `json:"free_bytes"`
		} `json:"disks"`
		Config map[string]string `json:"config"`
	}

	t.Run("queue", func(t *testing.T) {
		// The finished job is listed with the others.
		var q struct {
			Jobs []adminJob `json:"jobs"`
		}
		adminJSON(t, dir, &q, "queue")
		byID := map[string]adminJob{}
		for _, j := range q.Jobs {
			byID[j.JobID] = j
		}
		now := time.Now()
		plausible := func(ts time.Time) bool { return !ts.Before(begin.Add(-time.Minute)) && !ts.After(now.Add(time.Minute)) }
		for _, c := range []struct {
			id, state, file string
			size            int64
			started         bool
			attempts, pos   int
		}{
			{done, "succeeded", "done.7", 5, true, 1, 0},
			{running, "running", "hold.7", 9, true, 1, 0},
			{queued, "queued", "queued.7", 1, false, 0, 1},
		} {
			j, ok := byID[c.id]
			switch {
			case !ok:
				t.Errorf("admin queue --json does not list the %s job %s: %+v", c.state, c.id, q.Jobs)
				continue
			case j.State != c.state || j.Position != c.pos || j.Attempts != c.attempts:
				t.Errorf("%s job: state %s, position %d, attempts %d; want %s, %d, %d", c.state, j.State, j.Position, j.Attempts, c.state, c.pos, c.attempts)
			case !plausible(j.SubmittedAt):
				t.Errorf("%s job submitted_at %v, not within the test's run", c.state, j.SubmittedAt)
			case (j.StartedAt != nil) != c.started || (j.StartedAt != nil && (j.StartedAt.Before(j.SubmittedAt) || !plausible(*j.StartedAt))):
				t.Errorf("%s job started_at %v (submitted %v)", c.state, j.StartedAt, j.SubmittedAt)
			// recon submit checked the files with BLAKE3, and admin views
			// carry no BLAKE3 (protocol 3): no digest is shown.
			case len(j.Files) != 1 || j.Files[0].Name != c.file || j.Files[0].Size != c.size || j.Files[0].SHA256 != "" || j.Files[0].BLAKE3 != "":
				t.Errorf("%s job files %+v, want %s of %d bytes with no digest", c.state, j.Files, c.file, c.size)
			case !strings.HasPrefix(j.ClientAddr, "127.0.0.1"):
				t.Errorf("%s job client_addr %q, want 127.0.0.1…", c.state, j.ClientAddr)
			}
		}
		if j := byID[done]; j.FinishedAt == nil || j.StartedAt == nil || j.FinishedAt.Before(*j.StartedAt) {
			t.Errorf("succeeded job finished_at %v, started_at %v", j.FinishedAt, j.StartedAt)
		}
		r := admin(t, dir, "queue")
		if r.code != 0 || !regexp.MustCompile(`(?m)^JOB ID +STATE +POS +SUBMITTED +STARTED +FILES +SIZE +ATTEMPTS +IDENTITY +CLIENT$`).MatchString(r.stdout) {
			t.Errorf("admin queue: exit %d, no header\n%s%s", r.code, r.stdout, r.stderr)
		}
		day := byID[done].SubmittedAt.Local().Format(time.DateOnly)
		for _, c := range []struct{ id, want string }{
			{done, `succeeded +` + day + ` \S+ +` + day + ` \S+ +1 +5 B +1 +default +127\.0\.0\.1`},
			{running, `running +` + day + ` \S+ +` + day + ` \S+ +1 +9 B +1 +default +127\.0\.0\.1`},
			{queued, `queued +1 +` + day + ` \S+ +1 +1 B +0 +default +127\.0\.0\.1`},
		} {
			l := lineWith(r.stdout, c.id)
			if !regexp.MustCompile(`^` + c.id + ` +` + c.want).MatchString(l) {
				t.Errorf("admin queue row of %s = %q, want it to match %q", c.id, l, c.want)
			}
		}
	})

	t.Run("workers", func(t *testing.T) {
		r := admin(t, dir, "workers")
		if r.code != 0 || !strings.Contains(r.stdout, "max jobs  1\n") || !strings.Contains(r.stdout, "pool      running\n") ||
			!regexp.MustCompile(`(?m)^WORKER +STATE +JOB ID +IDENTITY +SINCE$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^1 +busy +`+running+` +default +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`).MatchString(r.stdout) {
			t.Errorf("admin workers: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("status", func(t *testing.T) {
		adminJSON(t, dir, &st, "status")
		if st.Version == "" || st.UptimeSeconds == nil || *st.UptimeSeconds < 0 {
			t.Errorf("admin status --json: version %q, uptime %v", st.Version, st.UptimeSeconds)
		}
		if st.Jobs["succeeded"] != 1 || st.Jobs["running"] != 1 || st.Jobs["queued"] != 1 {
			t.Errorf("admin status --json jobs = %v, want 1 succeeded, 1 running, 1 queued", st.Jobs)
		}
		if st.MaxWorkers != 1 || st.Workers.MaxJobs != 1 || len(st.Workers.Workers) != 1 || st.Workers.Workers[0].State != "busy" ||
			st.Workers.Paused == nil || *st.Workers.Paused {
			t.Errorf("admin status --json workers = %+v (max_workers %d)", st.Workers, st.MaxWorkers)
		}
		res := st.Resources
		if res.Error != "" || res.CPUPercent == nil || *res.CPUPercent < 0 || *res.CPUPercent > 100 || res.MaxCPUPercent != 100 ||
			res.AvailableMemoryMB <= 0 || res.MinAvailableMemoryMB == nil || *res.MinAvailableMemoryMB != 0 || res.CheckedAt.IsZero() {
			t.Errorf("admin status --json resources = %+v", res)
		}
		wantDisks := map[string]string{
			"RECON_SERVER_BASE_PFILE_DIR": filepath.Join(dir, "data", "inputs"),
			"RECON_JOB_OUTPUT_BASE_DIR":   filepath.Join(dir, "data", "outputs"),
			"RECON_SERVER_STATE_DIR":      filepath.Join(dir, "data", "state"),
		}
		if len(st.Disks) != len(wantDisks) {
			t.Errorf("admin status --json disks = %+v, want %d", st.Disks, len(wantDisks))
		}
		for _, d := range st.Disks {
			if want, ok := wantDisks[d.Key]; !ok || !sameDir(d.Path, want) || d.FreeBytes <= 0 {
				t.Errorf("admin status --json disk %+v, want %s at %s with free bytes", d, d.Key, want)
			}
		}
		if st.Config["MAX_CONCURRENT_JOBS"] != "1" || st.Config["KILL_GRACE_SECONDS"] != "10" {
			t.Errorf("admin status --json config = %v", st.Config)
		}
		r := admin(t, dir, "status")
		for _, want := range []string{
			"server version  " + st.Version + "\n",
			"\nuptime          ",
			"\njobs            queued 1, running 1, succeeded 1, failed 0, cancelled 0\n",
			"\nworkers         1 max: 1 busy, 0 idle, 0 paused\n",
			"(pause above 100%)\n",
			" MB available (pause below 0 MB)\n",
			"\nsettings\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("admin status lacks %q:\n%s", want, r.stdout)
			}
		}
		if !regexp.MustCompile(`(?m)^cpu +\d+% \(pause above 100%\)$`).MatchString(r.stdout) {
			t.Errorf("admin status has no cpu line:\n%s", r.stdout)
		}
		for k := range wantDisks {
			if !regexp.MustCompile(`(?m)^disk +\S+ \(` + k + `\): \S+ \S+ free$`).MatchString(r.stdout) {
				t.Errorf("admin status has no free-disk line for %s:\n%s", k, r.stdout)
			}
		}
		if !regexp.MustCompile(`(?m)^  MAX_CONCURRENT_JOBS +1$`).MatchString(r.stdout) {
			t.Errorf("admin status settings before setmaxjobs:\n%s", r.stdout)
		}
	})

	t.Run("setmaxjobs", func(t *testing.T) {
		// The human form, then workers and status show it.
		r := admin(t, dir, "setmaxjobs", "4")
		if r.code != 0 || !strings.Contains(r.stdout, "max concurrent jobs: 1 → 4\n") ||
			!strings.Contains(r.stdout, "until the server restarts") || !strings.Contains(r.stdout, "MAX_CONCURRENT_JOBS") {
			t.Errorf("admin setmaxjobs 4: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = admin(t, dir, "workers")
		if rows := regexp.MustCompile(`(?m)^\d+ +(idle|busy|paused|stopping) `).FindAllString(r.stdout, -1); r.code != 0 ||
			!strings.Contains(r.stdout, "max jobs  4\n") || len(rows) != 4 {
			t.Errorf("admin workers after setmaxjobs 4: exit %d, %d rows\n%s%s", r.code, len(rows), r.stdout, r.stderr)
		}
		adminJSON(t, dir, &st, "status")
		if st.MaxWorkers != 4 || st.Workers.MaxJobs != 4 || len(st.Workers.Workers) != 4 || st.Config["MAX_CONCURRENT_JOBS"] != "1" {
			t.Errorf("admin status --json after setmaxjobs 4: max_workers %d, workers %+v, MAX_CONCURRENT_JOBS %q",
				st.MaxWorkers, st.Workers, st.Config["MAX_CONCURRENT_JOBS"])
		}
		r = admin(t, dir, "status")
		if !regexp.MustCompile(`(?m)^workers +4 max: `).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^  MAX_CONCURRENT_JOBS +1 \(now 4, set by setmaxjobs until restart\)$`).MatchString(r.stdout) {
			t.Errorf("admin status after setmaxjobs 4 does not show the new maximum:\n%s", r.stdout)
		}
		// With room, the queued job runs by itself.
		waitState(t, dir, "client.opts", queued, "succeeded")
	})

	t.Run("logs --json", func(t *testing.T) {
		var logs struct {
			Records []map[string]any `json:"records"`
		}
		adminJSON(t, dir, &logs, "logs", "--lines", "4")
		if len(logs.Records) != 4 {
			t.Errorf("admin logs --json --lines 4: %d records", len(logs.Records))
		}
		for _, rec := range logs.Records {
			if rec["msg"] == nil || rec["time"] == nil || rec["level"] == nil {
				t.Errorf("admin logs --json record without msg, time or level: %v", rec)
			}
		}
		adminJSON(t, dir, &logs, "logs", "--jobid", done)
		if len(logs.Records) < 2 {
			t.Errorf("admin logs --json --jobid %s: %d records", done, len(logs.Records))
		}
		for _, rec := range logs.Records {
			if rec["job_id"] != done {
				t.Errorf("admin logs --json --jobid %s returned %v", done, rec)
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		// Human form; a succeeded and an unknown job fail.
		r := admin(t, dir, "cancel", running)
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("job %s: running → cancelled", running) {
			t.Errorf("admin cancel of the running job: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = admin(t, dir, "cancel", done)
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "job "+done+" has already ended (succeeded)") {
			t.Errorf("admin cancel of a succeeded job: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
		}
		r = admin(t, dir, "--json", "cancel", done)
		if r.code == 0 || !strings.Contains(r.stderr, "already ended") {
			t.Errorf("admin --json cancel of a succeeded job: exit %d, %q", r.code, r.stderr)
		}
		if r := admin(t, dir, "cancel", "aaaaaaaaaaaaaaaaaaaaaaaaaa"); r.code == 0 || !strings.Contains(r.stderr, "no job") {
			t.Errorf("admin cancel of an unknown job: exit %d, %q", r.code, r.stderr)
		}
		if s := jobState(t, dir, "client.opts", done); s != "succeeded" {
			t.Errorf("the succeeded job is %s after a refused cancel", s)
		}
	})
}

// sameDir reports whether a and b name the same directory.
func sameDir(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// TestAdminCancelStubbornScript cancels a running job whose script ignores
// SIGTERM and left a grandchild that ignores it too: after
// KILL_GRACE_SECONDS the whole process group is killed, the job is
// cancelled and both its input and output directories are removed.
func TestAdminCancelStubbornScript(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "stubborn.sh", `#!/bin/sh
d="`+dir+`"
trap 'echo term >> "$d/term-$RECON_JOB_ID"' TERM
sh -c 'trap "" TERM; exec sleep 1000' &
echo $! > "$d/child-$RECON_JOB_ID"
echo partial > "$3/partial.out"
echo "$3" > "$d/out-$RECON_JOB_ID"
echo $$ > "$d/pid-$RECON_JOB_ID"
while :; do sleep 0.05; done
`)
	key := serverOpts(t, dir, script, "KILL_GRACE_SECONDS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)

	id := submitFile(t, dir, "client.opts", "a.7", "raw")
	pidOf := func(name string) int {
		b, _ := os.ReadFile(filepath.Join(dir, name+"-"+id))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	servertest.Eventually(t, 20*time.Second, "the script and its grandchild run", func() bool {
		return pidOf("pid") > 0 && pidOf("child") > 0
	})
	scriptPID, child := pidOf("pid"), pidOf("child")
	// The script writes into its attempt's directory; the job's output
	// directory appears only when the attempt ends.
	b, _ := os.ReadFile(filepath.Join(dir, "out-"+id))
	in, out := filepath.Join(dir, "data", "inputs", id), strings.TrimSpace(string(b))
	if _, err := os.Stat(filepath.Join(out, "partial.out")); err != nil {
		t.Fatalf("the script's output is not there: %v", err)
	}
	if _, err := os.Stat(in); err != nil {
		t.Fatalf("the job's input dir is not there: %v", err)
	}

	var c struct {
		JobID         string `json:"job_id"`
		PreviousState string `json:"previous_state"`
		State         string `json:"state"`
	}
	adminJSON(t, dir, &c, "cancel", id)
	if c.JobID != id || c.PreviousState != "running" || c.State != "cancelled" {
		t.Errorf("cancel = %+v, want running → cancelled", c)
	}
	// The script got SIGTERM and ignored it: only SIGKILL ended it.
	if b, err := os.ReadFile(filepath.Join(dir, "term-"+id)); err != nil || !strings.Contains(string(b), "term") {
		t.Errorf("the script did not see SIGTERM: %v", err)
	}
	for _, pid := range []int{scriptPID, child} {
		servertest.Eventually(t, 20*time.Second, fmt.Sprintf("process %d is gone", pid), func() bool { return processGone(pid) })
	}
	if s := jobState(t, dir, "client.opts", id); s != "cancelled" {
		t.Errorf("job state %s, want cancelled", s)
	}
	for _, d := range []string{in, out, filepath.Join(dir, "data", "outputs", id)} {
		servertest.Eventually(t, 20*time.Second, d+" is removed", func() bool {
			_, err := os.Lstat(d)
			return os.IsNotExist(err)
		})
	}
	logs := admin(t, dir, "logs", "--jobid", id, "--lines", "1000")
	if !strings.Contains(logs.stdout, "job cancelled by an administrator") && !strings.Contains(logs.stdout, `"state":"cancelled"`) {
		t.Errorf("the job's log does not record the cancel:\n%s", logs.stdout)
	}
}

// TestAdminRefusedOutsideTrustedIPs: with TRUSTED_IPS not covering
// 127.0.0.1, recon admin is refused with a clear error, the server logs the
// refusal and keeps running (and refusing).
func TestAdminRefusedOutsideTrustedIPs(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "TRUSTED_IPS = 10.0.0.0/8")
	srv := startServer(t, dir, "recon.opts")
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	refusals := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "connection refused: address not in the allow-list") && strings.Contains(l, "127.0.0.1") {
				n++
			}
		}
		return n
	}
	for i := 1; i <= 2; i++ {
		r := admin(t, dir, "status")
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "not allowed") || !strings.Contains(r.stderr, srv.adminAddr) {
			t.Errorf("admin status from 127.0.0.1 (try %d): exit %d\nstdout %q\nstderr %q", i, r.code, r.stdout, r.stderr)
		}
		servertest.Eventually(t, 20*time.Second, fmt.Sprintf("refusal %d logged", i), func() bool { return refusals() >= i })
		select {
		case err := <-srv.done:
			srv.done <- err
			t.Fatalf("the server exited after a refused admin: %v\n%s", err, srv.stderr.String())
		default:
		}
	}
}
