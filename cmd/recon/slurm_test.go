package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/servertest"
)

// The tests in this file run jobs on a real single-node Slurm cluster,
// started by scripts/slurm-up.sh (make test does it and passes its
// directory in RECON_TEST_SLURM). Without one they skip, except in strict
// mode, where they fail. Tests that need the cluster's CPUs to themselves,
// restart its controller or change PATH run alone; the others in parallel.

// slurmCluster points the test's processes at the test cluster and
// returns its directory.
func slurmCluster(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RECON_TEST_SLURM")
	if dir == "" {
		servertest.SkipUnlessStrict(t, "no Slurm cluster: RECON_TEST_SLURM is not set (scripts/slurm-up.sh starts one)")
	}
	conf := filepath.Join(dir, "etc", "slurm.conf")
	if _, err := os.Stat(conf); err != nil {
		t.Fatalf("RECON_TEST_SLURM=%s holds no cluster: %v", dir, err)
	}
	// Every Slurm test uses the one cluster: set once for the process, so
	// that tests can run in parallel (t.Setenv forbids it).
	slurmConfOnce.Do(func() { os.Setenv("SLURM_CONF", conf) })
	return dir
}

var slurmConfOnce, secretOnce sync.Once

// slurmScript is the test's reconstruction script, driven by the first
// line of its input file:
//
//	ok           copy the input, and SLURM_JOB_ID into slurm_job_id.txt
//	fail         write to stderr and exit 3
//	block DIR    record its pid and a daemonised child's in DIR, then wait
//	             for DIR/release (at most 120 s) and copy the input
func slurmScript(t *testing.T, dir string) string {
	return servertest.WriteScript(t, dir, "slurm.sh", `#!/bin/bash
in="$1" out="$3"
read -r cmd arg <"$in/input.txt"
echo "script for $RECON_JOB_ID in Slurm job $SLURM_JOB_ID"
case "$cmd" in
fail)
	echo "bad input: cannot reconstruct" >&2
	exit 3 ;;
block)
	echo $$ >"$arg/pid-$RECON_JOB_ID"
	setsid bash -c 'echo $$ >"$0"; exec sleep 300' "$arg/child-$RECON_JOB_ID" </dev/null >/dev/null 2>&1 &
	for i in $(seq 1 1200); do [ -e "$arg/release" ] && break; sleep 0.1; done ;;
esac
printf '%s' "$SLURM_JOB_ID" >"$out/slurm_job_id.txt"
env >"$out/env.txt"
cp "$in/input.txt" "$out/result.txt"
`)
}

// slurmServer writes the config of a server that runs its jobs on the test
// cluster, starts it, and writes client.opts and admin.opts for it.
func slurmServer(t *testing.T, dir string, extra ...string) (*serverProc, string) {
	t.Helper()
	script := slurmScript(t, dir)
	key := serverOpts(t, dir, script, append([]string{"EXECUTOR = slurm", "SLURM_POLL_INTERVAL_MS = 50", "KILL_GRACE_SECONDS = 1"}, extra...)...)
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	return srv, key
}

// submitInput submits a job whose input.txt holds content.
func submitInput(t *testing.T, dir, content string) string {
	t.Helper()
	return submitFile(t, dir, "client.opts", "input.txt", content)
}

// slurmJobs lists what the cluster knows of the Slurm jobs of recon job
// id: "slurm id|state" by job name.
func slurmJobs(t *testing.T, id string) []string {
	t.Helper()
	names := make([]string, 0, 5)
	for k := 1; k <= 5; k++ {
		names = append(names, "recon-"+id+"-"+strconv.Itoa(k))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "squeue", "-h", "-t", "all", "-o", "%i|%T|%j", "-n", strings.Join(names, ",")).Output()
	if err != nil {
		t.Fatalf("squeue: %v", err)
	}
	return strings.Fields(string(out))
}

type statusJSON struct {
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code"`
	Error    string `json:"error"`
	Detail   string `json:"detail"`
	Attempts int    `json:"attempts"`
}

func slurmStatus(t *testing.T, dir, id string) statusJSON {
	t.Helper()
	r := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	var s statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status --json %s: exit %d, %v\n%s%s", id, r.code, err, r.stdout, r.stderr)
	}
	return s
}

func waitSlurmState(t *testing.T, dir, id, want string, d time.Duration) statusJSON {
	t.Helper()
	var s statusJSON
	servertest.Eventually(t, d, "job "+id+" "+want, func() bool {
		s = slurmStatus(t, dir, id)
		return s.State == want
	})
	return s
}

// TestSlurmJobSucceedsAndFails: on the cluster a job's script runs inside
// Slurm (it sees SLURM_JOB_ID), as one Slurm job named recon-<id>-1, its
// results come back as for a local job, and its output reaches the
// server's log with both ids and recon admin logs --jobid; a failing
// script's exit status and stderr reach the user.
func TestSlurmJobSucceedsAndFails(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	// A secret in the server's environment must reach neither the
	// controller nor the script.
	secretOnce.Do(func() { os.Setenv("RECON_TEST_SECRET", "s3cret-value") })
	slurmServer(t, dir, "MAX_CONCURRENT_JOBS = 2")

	ok := submitInput(t, dir, "ok\n")
	bad := submitInput(t, dir, "fail\n")
	waitSlurmState(t, dir, ok, "succeeded", 60*time.Second)
	st := waitSlurmState(t, dir, bad, "failed", 60*time.Second)
	if st.ExitCode == nil || *st.ExitCode != 3 || !strings.Contains(st.Error, "status 3") || !strings.Contains(st.Error, "bad input: cannot reconstruct") {
		t.Errorf("failed job: exit %v, error %q; want exit 3 and the script's stderr", st.ExitCode, st.Error)
	}

	r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out", ok)
	if r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	sid, err := os.ReadFile(filepath.Join(dir, "out", "slurm_job_id.txt"))
	if err != nil || len(sid) == 0 {
		t.Fatalf("the script saw no SLURM_JOB_ID: %q, %v", sid, err)
	}
	env, err := os.ReadFile(filepath.Join(dir, "out", "env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SLURM_JOB_ID=" + string(sid) + "\n", "RECON_JOB_ID=" + ok + "\n", "RECON_OPTIONS_JSON={}\n"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("the script's environment lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(string(env), "s3cret-value") {
		t.Errorf("a variable of the server's environment outside the allow-list reached the script:\n%s", env)
	}
	if out, err := exec.Command("scontrol", "show", "job", "-o", string(sid)).Output(); err != nil || strings.Contains(string(out), "s3cret") {
		t.Errorf("scontrol show job %s: %v, or it holds the secret", sid, err)
	}
	if got := slurmJobs(t, ok); len(got) != 1 || got[0] != string(sid)+"|COMPLETED|recon-"+ok+"-1" {
		t.Errorf("Slurm jobs of %s = %q; want one, %s, COMPLETED, named recon-%s-1", ok, got, sid, ok)
	}

	// The script's stdout line, in the log with both ids.
	var found bool
	for _, rec := range readLog(t, filepath.Join(dir, "recon.log")) {
		if rec.str("msg") == "script output" && rec.str("job_id") == ok && strings.Contains(rec.str("line"), "in Slurm job "+string(sid)) {
			found = rec.str("slurm_job_id") == string(sid) && rec.str("stream") == "stdout"
		}
	}
	if !found {
		t.Errorf("no script output record with job_id %s and slurm_job_id %s in the log", ok, sid)
	}
	if r := admin(t, dir, "logs", "--jobid", bad); r.code != 0 || !strings.Contains(r.stdout, "bad input: cannot reconstruct") {
		t.Errorf("admin logs --jobid %s: exit %d, stdout lacks the script's stderr:\n%s%s", bad, r.code, r.stdout, r.stderr)
	}
	if r := admin(t, dir, "status"); !strings.Contains(r.stdout, "executor        slurm: probe job ok") {
		t.Errorf("admin status does not show the probe's success:\n%s", r.stdout)
	}
}

// TestSlurmCancelPendingAndRunning: with room on the cluster for one job,
// the second waits in Slurm and says why (status, admin workers); cancel
// of the pending job and of the running one end their Slurm jobs, and the
// running script's processes, a daemonised child too, are gone.
func TestSlurmCancelPendingAndRunning(t *testing.T) {
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	// Each job takes all 8 CPUs of the test node: one runs at a time.
	slurmServer(t, dir, "MAX_CONCURRENT_JOBS = 2", "SLURM_CPUS_PER_JOB = 8")
	t.Cleanup(func() { os.WriteFile(filepath.Join(pids, "release"), nil, 0o644) })

	running := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the first job's script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+running))
		return err == nil
	})
	pending := submitInput(t, dir, "block "+pids+"\n")
	var st statusJSON
	servertest.Eventually(t, 30*time.Second, "the second job pending in Slurm", func() bool {
		st = slurmStatus(t, dir, pending)
		return st.State == "running" && st.Detail == "pending in Slurm: Resources"
	})
	r := runRecon(t, dir, "status", "--opts", "client.opts", pending)
	if !strings.Contains(r.stdout, "running (pending in Slurm: Resources)") {
		t.Errorf("status of the pending job:\n%s", r.stdout)
	}
	w := admin(t, dir, "workers")
	pendingSlurm := slurmJobs(t, pending)
	runningSlurm := slurmJobs(t, running)
	if len(pendingSlurm) != 1 || len(runningSlurm) != 1 {
		t.Fatalf("Slurm jobs: %q, %q; want one each", runningSlurm, pendingSlurm)
	}
	pid, _, _ := strings.Cut(pendingSlurm[0], "|")
	rid, _, _ := strings.Cut(runningSlurm[0], "|")
	if !strings.Contains(w.stdout, "SLURM JOB") || !strings.Contains(w.stdout, pid) || !strings.Contains(w.stdout, "PENDING") ||
		!strings.Contains(w.stdout, rid) || !strings.Contains(w.stdout, "RUNNING") {
		t.Errorf("admin workers does not list both Slurm jobs (%s pending, %s running):\n%s", pid, rid, w.stdout)
	}

	if r := admin(t, dir, "cancel", pending); r.code != 0 {
		t.Fatalf("cancel pending: exit %d\n%s", r.code, r.stderr)
	}
	waitSlurmState(t, dir, pending, "cancelled", 30*time.Second)
	if got := slurmJobs(t, pending); len(got) != 1 || !strings.Contains(got[0], "|CANCELLED|") {
		t.Errorf("Slurm job of the cancelled pending job: %q, want CANCELLED", got)
	}

	scriptPid := readPid(t, filepath.Join(pids, "pid-"+running))
	childPid := readPid(t, filepath.Join(pids, "child-"+running))
	if processGone(scriptPid) || processGone(childPid) {
		t.Fatalf("the script (%d) or its child (%d) is not running before the cancel", scriptPid, childPid)
	}
	if r := admin(t, dir, "cancel", running); r.code != 0 {
		t.Fatalf("cancel running: exit %d\n%s", r.code, r.stderr)
	}
	waitSlurmState(t, dir, running, "cancelled", 30*time.Second)
	servertest.Eventually(t, 10*time.Second, "the script and its daemonised child gone", func() bool {
		return processGone(scriptPid) && processGone(childPid)
	})
	// SIGTERM ends the script within KILL_GRACE_SECONDS: Slurm says
	// FAILED (the batch script died of it) or CANCELLED (scancel).
	if got := slurmJobs(t, running); len(got) != 1 || !(strings.Contains(got[0], "|CANCELLED|") || strings.Contains(got[0], "|FAILED|")) {
		t.Errorf("Slurm job of the cancelled running job: %q, want it ended", got)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestSlurmServerKilledMidJob: the server is SIGKILLed while its job runs
// on the cluster; restarted, it attaches to the same Slurm job instead of
// submitting another, and the results are delivered.
func TestSlurmServerKilledMidJob(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	srv, key := slurmServer(t, dir)
	id := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+id))
		return err == nil
	})
	srv.kill9(t)

	srv = startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	servertest.Eventually(t, 30*time.Second, "the restarted server attaches to the Slurm job", func() bool {
		return strings.Contains(srv.stderr.String(), "") && len(logMessages(t, filepath.Join(dir, "recon.log"), "attaching to the job's Slurm job")) > 0
	})
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	waitSlurmState(t, dir, id, "succeeded", 60*time.Second)
	r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out", id)
	if r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out", "result.txt")); err != nil || !strings.HasPrefix(string(b), "block ") {
		t.Errorf("result.txt = %q, %v", b, err)
	}
	if got := slurmJobs(t, id); len(got) != 1 || !strings.Contains(got[0], "|COMPLETED|recon-"+id+"-1") {
		t.Errorf("Slurm jobs of %s = %q; want exactly one, COMPLETED", id, got)
	}
}

// TestSlurmControllerRestartedMidJob: slurmctld stops and starts again
// while a job runs; the server keeps following the job and delivers it.
func TestSlurmControllerRestartedMidJob(t *testing.T) {
	cluster := slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	slurmServer(t, dir)
	id := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+id))
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(cluster, "restart-ctld.sh")).CombinedOutput(); err != nil {
		t.Fatalf("restart slurmctld: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	waitSlurmState(t, dir, id, "succeeded", 60*time.Second)
	if got := slurmJobs(t, id); len(got) != 1 {
		t.Errorf("Slurm jobs of %s = %q; want exactly one", id, got)
	}
}

// TestSlurmMaxConcurrentJobs: with MAX_CONCURRENT_JOBS = 2, at most two of
// the server's jobs are in the cluster's hands at any time, although the
// cluster has room for more.
func TestSlurmMaxConcurrentJobs(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	slurmServer(t, dir, "MAX_CONCURRENT_JOBS = 2")
	var ids []string
	for range 4 {
		ids = append(ids, submitInput(t, dir, "block "+pids+"\n"))
	}
	started := func() int {
		n := 0
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(pids, "child-"+id)); err == nil {
				n++
			}
		}
		return n
	}
	inCluster := func() int {
		n := 0
		for _, id := range ids {
			for _, j := range slurmJobs(t, id) {
				if !strings.Contains(j, "|COMPLETED|") && !strings.Contains(j, "|CANCELLED|") {
					n++
				}
			}
		}
		return n
	}
	servertest.Eventually(t, 60*time.Second, "two scripts running", func() bool { return started() == 2 })
	// Long enough for a third to start if the server let it.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if n := inCluster(); n > 2 {
			t.Fatalf("%d of the server's jobs in the cluster, MAX_CONCURRENT_JOBS = 2", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := started(); n != 2 {
		t.Fatalf("%d scripts started, want 2", n)
	}
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	for _, id := range ids {
		waitSlurmState(t, dir, id, "succeeded", 60*time.Second)
	}
}

// restartSlurmServer starts the server of dir again and rewrites the
// client's and the admin's configs for its new ports.
func restartSlurmServer(t *testing.T, dir, key string) *serverProc {
	t.Helper()
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	return srv
}

// TestSlurmKilledBetweenSubmitAndRecord: the server dies after sbatch but
// before the Slurm job id reached the store (here: the record is removed
// from the stopped server's store). Restarted, it finds the Slurm job by
// its name and attaches to it: one Slurm job in all, results delivered.
func TestSlurmKilledBetweenSubmitAndRecord(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	srv, key := slurmServer(t, dir)
	id := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+id))
		return err == nil
	})
	srv.kill9(t)
	st, err := jobs.Open(filepath.Join(dir, "data", "state", "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetPlacement(t.Context(), id); err != nil {
		t.Errorf("no placement recorded for the running job: %v", err)
	}
	err = st.ClearPlacement(t.Context(), id)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	restartSlurmServer(t, dir, key)
	servertest.Eventually(t, 30*time.Second, "the restarted server finds the Slurm job by its name", func() bool {
		return len(logMessages(t, filepath.Join(dir, "recon.log"), "found the job's Slurm job by its name: attaching to it")) > 0
	})
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	waitSlurmState(t, dir, id, "succeeded", 60*time.Second)
	if r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out", id); r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	if got := slurmJobs(t, id); len(got) != 1 || !strings.Contains(got[0], "|COMPLETED|recon-"+id+"-1") {
		t.Errorf("Slurm jobs of %s = %q; want exactly one, COMPLETED", id, got)
	}
}

// TestSlurmExpiredRecordDecidedFromFiles: jobs that ended while the server
// was down, and that Slurm has forgotten by the time it is back (fake
// squeue and scontrol hide them), are decided from the batch wrapper's
// files: the one whose exit status is recorded succeeds with its results,
// the one whose exit file is missing fails, and neither runs again.
func TestSlurmExpiredRecordDecidedFromFiles(t *testing.T) {
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	srv, key := slurmServer(t, dir, "MAX_CONCURRENT_JOBS = 2")
	done := submitInput(t, dir, "block "+pids+"\n")
	lost := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "both scripts run", func() bool {
		_, err1 := os.Stat(filepath.Join(pids, "child-"+done))
		_, err2 := os.Stat(filepath.Join(pids, "child-"+lost))
		return err1 == nil && err2 == nil
	})
	srv.kill9(t)
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	var hide []string
	servertest.Eventually(t, 30*time.Second, "both Slurm jobs completed", func() bool {
		hide = hide[:0]
		for _, id := range []string{done, lost} {
			if got := slurmJobs(t, id); len(got) == 1 && strings.Contains(got[0], "|COMPLETED|") {
				sid, _, _ := strings.Cut(got[0], "|")
				hide = append(hide, sid)
			}
		}
		return len(hide) == 2
	})
	if err := os.Remove(filepath.Join(dir, "data", "outputs", ".slurm-"+lost+"-1", "exit")); err != nil {
		t.Fatal(err)
	}

	// squeue and scontrol that no longer know the two jobs.
	fake := t.TempDir()
	squeue, err1 := exec.LookPath("squeue")
	scontrol, err2 := exec.LookPath("scontrol")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	re := strings.Join(hide, "|")
	writeFile(t, filepath.Join(fake, "squeue"), "#!/bin/bash\nout=$("+squeue+` "$@"); rc=$?
[ -n "$out" ] && printf '%s\n' "$out" | grep -v -E '^(`+re+`)\|'
exit $rc
`, 0o755)
	writeFile(t, filepath.Join(fake, "scontrol"), `#!/bin/bash
for a in "$@"; do case "$a" in `+re+`) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;; esac; done
exec `+scontrol+` "$@"
`, 0o755)
	realPath := os.Getenv("PATH")
	t.Setenv("PATH", fake+string(os.PathListSeparator)+realPath)

	restartSlurmServer(t, dir, key)
	waitSlurmState(t, dir, done, "succeeded", 60*time.Second)
	st := waitSlurmState(t, dir, lost, "failed", 60*time.Second)
	if !strings.Contains(st.Error, "no longer known to Slurm, and the script's exit status was not recorded") {
		t.Errorf("error of the job without an exit file: %q", st.Error)
	}
	if r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", "out", done); r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out", "result.txt")); err != nil || !strings.HasPrefix(string(b), "block ") {
		t.Errorf("result.txt = %q, %v", b, err)
	}
	os.Setenv("PATH", realPath) // the real squeue again (t.Setenv restores it at the end too)
	for _, id := range []string{done, lost} {
		if got := slurmJobs(t, id); len(got) != 1 {
			t.Errorf("Slurm jobs of %s = %q; want exactly one", id, got)
		}
	}
}

// TestSlurmJobTimeout: JOB_TIMEOUT_SECONDS holds on the cluster: recon
// cancels the Slurm job and the job fails for its timeout.
func TestSlurmJobTimeout(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	t.Cleanup(func() { os.WriteFile(filepath.Join(pids, "release"), nil, 0o644) })
	slurmServer(t, dir, "JOB_TIMEOUT_SECONDS = 2")
	id := submitInput(t, dir, "block "+pids+"\n")
	st := waitSlurmState(t, dir, id, "failed", 60*time.Second)
	if !strings.Contains(st.Error, "timed out after 2s (JOB_TIMEOUT_SECONDS)") {
		t.Errorf("error = %q, want the job timeout", st.Error)
	}
	child := readPid(t, filepath.Join(pids, "child-"+id))
	servertest.Eventually(t, 10*time.Second, "the script's daemonised child gone", func() bool { return processGone(child) })
}

// TestSlurmCleanStopLeavesJobRunning: a server stopped cleanly leaves its
// job running on the cluster and attaches to it when it starts again; the
// stop costs the job no attempt.
func TestSlurmCleanStopLeavesJobRunning(t *testing.T) {
	t.Parallel()
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	t.Cleanup(func() { os.WriteFile(filepath.Join(pids, "release"), nil, 0o644) })
	srv, key := slurmServer(t, dir)
	id := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+id))
		return err == nil
	})
	srv.stop(t)
	if got := slurmJobs(t, id); len(got) != 1 || !strings.Contains(got[0], "|RUNNING|") {
		t.Fatalf("Slurm jobs after a clean stop: %q, want the job still RUNNING", got)
	}
	restartSlurmServer(t, dir, key)
	writeFile(t, filepath.Join(pids, "release"), "", 0o644)
	st := waitSlurmState(t, dir, id, "succeeded", 60*time.Second)
	if st.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", st.Attempts)
	}
	if got := slurmJobs(t, id); len(got) != 1 {
		t.Errorf("Slurm jobs of %s = %q; want exactly one", id, got)
	}
}

// TestSlurmSlowTimeLimit: a job that outlives its Slurm time limit
// (SLURM_TIME_LIMIT_MINUTES = 1; Slurm notices within about 90 s) fails
// with Slurm's reason, and its processes are gone. Slow: make
// test-slurm-slow runs it, make test does not.
func TestSlurmSlowTimeLimit(t *testing.T) {
	if os.Getenv("RECON_SLURM_SLOW") == "" {
		t.Skip("slow (about 2 minutes): make test-slurm-slow runs it")
	}
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	t.Cleanup(func() { os.WriteFile(filepath.Join(pids, "release"), nil, 0o644) })
	// The script waits for release at most 120 s: longer than the limit.
	slurmServer(t, dir, "SLURM_TIME_LIMIT_MINUTES = 1")
	id := submitInput(t, dir, "block "+pids+"\n")
	st := waitSlurmState(t, dir, id, "failed", 4*time.Minute)
	if !strings.Contains(st.Error, "ended TIMEOUT") || !strings.Contains(st.Error, "time limit") {
		t.Errorf("error = %q, want Slurm's TIMEOUT", st.Error)
	}
	child := readPid(t, filepath.Join(pids, "child-"+id))
	servertest.Eventually(t, 10*time.Second, "the script's daemonised child gone", func() bool { return processGone(child) })
}

// TestSlurmBench measures what recon adds to a Slurm job: 50 trivial jobs
// queued at once and run one after another by a server (from "job started" to "job ended"
// in its log: sbatch, polling, collecting the results, recording the end)
// against 50 bare sbatch --parsable runs of the same script on the same
// input, polled with squeue at the same interval. Not part of make test: make bench-slurm runs it.
func TestSlurmBench(t *testing.T) {
	if os.Getenv("RECON_SLURM_BENCH") == "" {
		t.Skip("benchmark: make bench-slurm runs it")
	}
	slurmCluster(t)
	n, poll := 50, 50*time.Millisecond
	if v, err := strconv.Atoi(os.Getenv("RECON_SLURM_BENCH_JOBS")); err == nil && v > 0 {
		n = v
	}
	dir := t.TempDir()

	// The bare jobs run the same script on the same input, without recon.
	script := slurmScript(t, dir)
	in, out := filepath.Join(dir, "bare-in"), filepath.Join(dir, "bare-out")
	os.MkdirAll(out, 0o755)
	os.MkdirAll(in, 0o755)
	writeFile(t, filepath.Join(in, "input.txt"), "ok\n", 0o644)
	bareJob := "#!/bin/bash\ncd " + in + " && exec " + script + " " + in + " --output-dir " + out + "\n"
	bare := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "sbatch", "--parsable", "--no-requeue", "--chdir="+dir, "--output=/dev/null", "--error=/dev/null")
		cmd.Stdin = strings.NewReader(bareJob)
		out, err := cmd.Output()
		if err != nil {
			cancel()
			t.Fatalf("sbatch: %v", err)
		}
		id := strings.TrimSpace(string(out))
		for {
			out, err := exec.CommandContext(ctx, "squeue", "-h", "-t", "all", "-o", "%T", "-j", id).Output()
			if err != nil {
				cancel()
				t.Fatalf("squeue: %v", err)
			}
			if s := strings.TrimSpace(string(out)); s == "COMPLETED" || s == "FAILED" {
				break
			}
			time.Sleep(poll - time.Duration(time.Now().UnixNano()%int64(poll)))
		}
		cancel()
		bare = append(bare, time.Since(start))
	}

	// All queued at once, one at a time on the cluster: the server runs
	// them back to back, as the bare loop does.
	slurmServer(t, dir, "SLURM_POLL_INTERVAL_MS = 50", "MAX_CONCURRENT_JOBS = 1")
	var ids []string
	for range n {
		ids = append(ids, submitInput(t, dir, "ok\n"))
	}
	for _, id := range ids {
		waitSlurmState(t, dir, id, "succeeded", 5*time.Minute)
	}
	// Each job's steps, from its log records.
	steps := []string{"job started", "submitted to Slurm", "running in Slurm", "Slurm job ended", "job ended"}
	seen := map[string]map[string]time.Time{}
	for _, rec := range readLog(t, filepath.Join(dir, "recon.log")) {
		at, _ := time.Parse(time.RFC3339Nano, rec.str("time"))
		if id := rec.str("job_id"); id != "" && slices.Contains(steps, rec.str("msg")) {
			if seen[id] == nil {
				seen[id] = map[string]time.Time{}
			}
			seen[id][rec.str("msg")] = at
		}
	}
	var withRecon []time.Duration
	phases := make([][]time.Duration, len(steps)-1)
	for _, m := range seen {
		if len(m) != len(steps) {
			continue
		}
		withRecon = append(withRecon, m["job ended"].Sub(m["job started"]))
		for i := range phases {
			phases[i] = append(phases[i], m[steps[i+1]].Sub(m[steps[i]]))
		}
	}
	if len(withRecon) != n {
		t.Fatalf("%d jobs ended in the log, want %d", len(withRecon), n)
	}
	pct := func(d []time.Duration, p int) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[(len(s)-1)*p/100]
	}
	for i, ph := range phases {
		t.Logf("%q to %q: p50 %v, p90 %v", steps[i], steps[i+1], pct(ph, 50).Round(time.Millisecond), pct(ph, 90).Round(time.Millisecond))
	}
	for _, p := range []int{50, 90} {
		b, r := pct(bare, p), pct(withRecon, p)
		t.Logf("p%d: bare sbatch+squeue %v, through recon %v, recon adds %v", p, b.Round(time.Millisecond), r.Round(time.Millisecond), (r - b).Round(time.Millisecond))
	}
}

// TestSlurmProbeFailsJobsHeld: when the probe job cannot see the input
// directory (here a fake sbatch swaps the probe's script for one that
// fails as it would), jobs are accepted and held, queued, and recon admin
// status says why.
func TestSlurmProbeFailsJobsHeld(t *testing.T) {
	slurmCluster(t)
	dir := t.TempDir()
	fake := t.TempDir()
	sbatch, err := exec.LookPath("sbatch")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(fake, "sbatch"), `#!/bin/bash
for a in "$@"; do
	if [ "$a" = --job-name=recon-probe ]; then
		printf '#!/bin/bash\nexit 3\n' | `+sbatch+` "$@"
		exit
	fi
done
exec `+sbatch+` "$@"
`, 0o755)
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	slurmServer(t, dir)
	id := submitInput(t, dir, "ok\n")
	var r cmdResult
	defer func() {
		if t.Failed() {
			t.Logf("admin status:\n%s", r.stdout)
		}
	}()
	servertest.Eventually(t, 30*time.Second, "admin status shows the failed probe", func() bool {
		r = admin(t, dir, "status")
		return strings.Contains(r.stdout, "executor        slurm: probe job failed, retrying: the probe job could not read a file under RECON_SERVER_BASE_PFILE_DIR")
	})
	if !strings.Contains(r.stdout, "filesystem the compute nodes share") || !strings.Contains(r.stdout, "paused          waiting for the Slurm probe job") {
		t.Errorf("admin status:\n%s", r.stdout)
	}
	if st := slurmStatus(t, dir, id); st.State != "queued" {
		t.Errorf("job %s is %s while the probe fails, want queued", id, st.State)
	}
	if got := slurmJobs(t, id); len(got) != 0 {
		t.Errorf("Slurm jobs of %s while held: %q", id, got)
	}
}

// TestSlurmCancelQueuedAfterStop: a job whose Slurm job was left running by
// a clean stop is queued again; cancelled then, before the new server
// takes it (the probe holds it), its Slurm job is cancelled too.
func TestSlurmCancelQueuedAfterStop(t *testing.T) {
	slurmCluster(t)
	dir := t.TempDir()
	pids := t.TempDir()
	t.Cleanup(func() { os.WriteFile(filepath.Join(pids, "release"), nil, 0o644) })
	srv, key := slurmServer(t, dir)
	id := submitInput(t, dir, "block "+pids+"\n")
	servertest.Eventually(t, 60*time.Second, "the script runs", func() bool {
		_, err := os.Stat(filepath.Join(pids, "child-"+id))
		return err == nil
	})
	srv.stop(t)
	// The restarted server holds its jobs: its probe never succeeds.
	fake := t.TempDir()
	writeFile(t, filepath.Join(fake, "sbatch"), "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account' >&2\nexit 1\n", 0o755)
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	restartSlurmServer(t, dir, key)
	if st := slurmStatus(t, dir, id); st.State != "queued" {
		t.Fatalf("job %s is %s after the restart, want queued", id, st.State)
	}
	if r := admin(t, dir, "cancel", id); r.code != 0 {
		t.Fatalf("cancel: exit %d\n%s", r.code, r.stderr)
	}
	child := readPid(t, filepath.Join(pids, "child-"+id))
	servertest.Eventually(t, 30*time.Second, "the Slurm job ended and the script's child gone", func() bool {
		got := slurmJobs(t, id)
		return len(got) == 1 && !strings.Contains(got[0], "|RUNNING|") && processGone(child)
	})
	if _, err := os.Stat(filepath.Join(dir, "data", "outputs", ".slurm-"+id+"-1")); !os.IsNotExist(err) {
		t.Errorf("the wrapper's files are left: %v", err)
	}
}
