package server

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
)

// The Slurm executor against a real cluster is tested through the binary
// (cmd/recon slurm_test.go). These tests cover what a real single-node
// cluster cannot show on demand: the parsing of the tools' answers, and
// the ends only a big cluster produces (out of memory, node failure,
// preemption), with fake tools.

func TestParseSbatchID(t *testing.T) {
	for _, tc := range []struct {
		out, id string
		ok      bool
	}{
		{"13\n", "13", true},
		{"42;cluster2\n", "42", true},
		{"  7  ", "7", true},
		{"", "", false},
		{"Submitted batch job 13\n", "", false},
		{"13_1\n", "", false},
		{"-1\n", "", false},
		{"123456789012345678901\n", "", false},
	} {
		id, err := parseSbatchID(tc.out)
		if (err == nil) != tc.ok || id != tc.id {
			t.Errorf("parseSbatchID(%q) = %q, %v; want %q, ok %v", tc.out, id, err, tc.id, tc.ok)
		}
	}
}

func TestParseSqueue(t *testing.T) {
	out := "13|RUNNING|None|recon-abc-1\n" +
		"14|PENDING|Resources|recon-def-2\n" +
		"garbage line\n" +
		"x|RUNNING|None|y\n" +
		"15||None|z\n" +
		"16|PENDING|Priority|name|with|bars\n"
	got := parseSqueue(out)
	want := []slurmJob{
		{ID: "13", State: "RUNNING", Reason: "None", Name: "recon-abc-1"},
		{ID: "14", State: "PENDING", Reason: "Resources", Name: "recon-def-2"},
		{ID: "16", State: "PENDING", Reason: "Priority", Name: "name|with|bars"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseSqueue = %+v\nwant %+v", got, want)
	}
}

func TestParseScontrol(t *testing.T) {
	out := "JobId=4 JobName=recon-abc-1 UserId=root(0) JobState=OUT_OF_MEMORY Reason=OutOfMemory Dependency=(null) ExitCode=0:125 RunTime=00:00:01 StdOut=/x/slurm-4.out\n"
	got := parseScontrol(out)
	want := slurmJob{ID: "4", Name: "recon-abc-1", State: "OUT_OF_MEMORY", Reason: "OutOfMemory", Exit: "0:125"}
	if got != want {
		t.Errorf("parseScontrol = %+v, want %+v", got, want)
	}
}

// TestShellQuoteBash: every byte but NUL, and strings meant to break out
// of quoting, come back from bash exactly as given.
func TestShellQuoteBash(t *testing.T) {
	var all []byte
	for b := 1; b < 256; b++ {
		all = append(all, byte(b))
	}
	for _, s := range []string{"", "plain", "it's", `back\slash`, "$(reboot)", "`id`", "a'b'c", "\r\n\t", "'; rm -rf / #", string(all)} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "bash", "-c", "printf %s "+shellQuote(s)).Output()
		cancel()
		if err != nil || string(out) != s {
			t.Errorf("bash printf %s = %q, %v; want %q", shellQuote(s), out, err, s)
		}
	}
	for _, s := range []string{string(all), "\r\n"} {
		q := shellQuote(s)
		for i := 0; i < len(q); i++ {
			if q[i] < 0x20 || q[i] >= 0x7f {
				t.Errorf("shellQuote left byte %#x in the script text", q[i])
			}
		}
	}
}

func testSlurmExecutor(t *testing.T, fakeTools map[string]string, mod func(*config.Server)) *slurmExecutor {
	t.Helper()
	dir := t.TempDir()
	cfg := &config.Server{
		InputBaseDir: filepath.Join(dir, "in"), OutputBaseDir: filepath.Join(dir, "out"), StateDir: filepath.Join(dir, "state"),
		ScriptPath: "/bin/true", Executor: config.ExecutorSlurm, MaxResultBytes: 1 << 30,
		Slurm: config.Slurm{PollInterval: 20 * time.Millisecond},
	}
	if mod != nil {
		mod(cfg)
	}
	for _, d := range []string{cfg.InputBaseDir, cfg.OutputBaseDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	store, err := jobs.Open(filepath.Join(cfg.StateDir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := newSlurmExecutor(cfg, slog.New(slog.DiscardHandler), store, time.Second)
	tools := t.TempDir()
	for name, body := range fakeTools {
		if err := os.WriteFile(filepath.Join(tools, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.cli.prefix = tools + "/"
	return e
}

// TestSlurmEndsFail: the ends Slurm gives a job without the script's own
// end (time limit, out of memory, node failure, preemption, cancel by
// someone else) make the attempt fail with Slurm's state and reason, the
// exit status the wrapper recorded if any, and the script's output
// removed.
func TestSlurmEndsFail(t *testing.T) {
	for _, tc := range []struct {
		state, reason, want string
		exitFile            bool
	}{
		{"TIMEOUT", "TimeLimit", "Slurm job 9 ended TIMEOUT (TimeLimit): it reached its Slurm time limit", false},
		{"OUT_OF_MEMORY", "OutOfMemory", "Slurm job 9 ended OUT_OF_MEMORY (OutOfMemory): it ran out of memory", true},
		{"NODE_FAIL", "NodeDown", "Slurm job 9 ended NODE_FAIL (NodeDown): its node failed", false},
		{"PREEMPTED", "None", "Slurm job 9 ended PREEMPTED: it was preempted", false},
		{"CANCELLED", "None", "Slurm job 9 ended CANCELLED", true},
	} {
		t.Run(tc.state, func(t *testing.T) {
			e := testSlurmExecutor(t, map[string]string{
				"scontrol": "echo 'JobId=9 JobName=recon-j-1 JobState=" + tc.state + " Reason=" + tc.reason + " ExitCode=0:15'",
			}, nil)
			a := attempt{jobID: "j", n: 1, log: slog.New(slog.DiscardHandler)}
			ctl, work := e.ctlDir("j", 1), e.attemptDir("j", 1)
			os.MkdirAll(ctl, 0o755)
			os.MkdirAll(work, 0o700)
			if tc.exitFile {
				os.WriteFile(filepath.Join(ctl, "exit"), []byte("137\n"), 0o644)
			}
			os.WriteFile(filepath.Join(ctl, "stderr"), []byte("killed while writing\n"), 0o644)
			last := slurmJob{ID: "9", State: tc.state, Reason: "None", Name: "recon-j-1"}
			o := e.ended(t.Context(), a, a.log, earlier{n: 1, slurmID: "9"}, newSlurmOutput(a.log, ctl), true, last)
			if o.end != failed || o.msg != tc.want {
				t.Errorf("outcome %v %q, want failed %q", o.end, o.msg, tc.want)
			}
			if tc.exitFile != (o.exit != nil) || (o.exit != nil && *o.exit != 137) {
				t.Errorf("exit %v, want the recorded 137: %v", o.exit, tc.exitFile)
			}
			if !strings.Contains(o.stderrTail, "killed while writing") {
				t.Errorf("stderr tail %q", o.stderrTail)
			}
			for _, d := range []string{ctl, work, e.outputDir("j")} {
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("%s left behind: %v", d, err)
				}
			}
		})
	}
}

// TestSlurmControllerDownKeepsWaiting: while squeue fails (the controller
// is down), the attempt is neither decided nor abandoned: it waits, and
// ends the way Slurm says once it answers again.
func TestSlurmControllerDownKeepsWaiting(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up")
	e := testSlurmExecutor(t, map[string]string{
		"squeue":   `[ -e ` + up + ` ] || { echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1; }; echo '9|COMPLETED|None|recon-j-1'`,
		"scontrol": "echo 'JobId=9 JobName=recon-j-1 JobState=COMPLETED Reason=None ExitCode=0:0'",
	}, nil)
	a := attempt{jobID: "j", n: 1, log: slog.New(slog.DiscardHandler)}
	ctl, work := e.ctlDir("j", 1), e.attemptDir("j", 1)
	os.MkdirAll(ctl, 0o755)
	os.MkdirAll(work, 0o700)
	os.WriteFile(filepath.Join(ctl, "exit"), []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(work, "image.dcm"), []byte("x"), 0o644)
	res := make(chan outcome, 1)
	go func() { res <- e.follow(t.Context(), a, a.log, earlier{n: 1, slurmID: "9"}) }()
	select {
	case o := <-res:
		t.Fatalf("decided while the controller was down: %+v", o)
	case <-time.After(500 * time.Millisecond):
	}
	os.WriteFile(up, nil, 0o644)
	select {
	case o := <-res:
		if o.end != exited || o.exit == nil || *o.exit != 0 {
			t.Errorf("outcome %+v, want exited 0", o)
		}
		if _, err := os.Stat(filepath.Join(e.outputDir("j"), "image.dcm")); err != nil {
			t.Errorf("output not promoted: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome 10 s after the controller came back")
	}
}

// TestSbatchArgs: the fixed options come first, Slurm's time limit is the
// job timeout rounded up plus a minute unless SLURM_TIME_LIMIT_MINUTES is
// set, and job options override keys only when SLURM_OPTIONS_FROM_JOB lists
// them.
func TestSbatchArgs(t *testing.T) {
	e := testSlurmExecutor(t, nil, func(c *config.Server) {
		c.JobTimeout = 90 * time.Second
		c.Slurm.Partition, c.Slurm.GRES, c.Slurm.CPUsPerJob = "cpu", "gpu:1", 4
		c.Slurm.ExtraArgs = []string{"--constraint=ib"}
		c.Slurm.OptionsFromJob = []string{config.JobOptSlurmGRES, config.JobOptSlurmMemMB}
	})
	a := attempt{jobID: "j", n: 2, options: map[string]string{"slurm_gres": "gpu:2", "slurm_partition": "big", "slurm_mem_mb": "512"}}
	args, err := e.sbatchArgs(a, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctl := e.ctlDir("j", 2)
	want := []string{"--job-name=recon-j-2", "--no-requeue", "--chdir=" + ctl, "--output=" + ctl + "/stdout", "--error=" + ctl + "/stderr",
		"--partition=cpu", "--time=3", "--cpus-per-task=4", "--mem=512", "--gres=gpu:2", "--constraint=ib"}
	if !slices.Equal(args, want) {
		t.Errorf("sbatch args\n%q\nwant\n%q", args, want)
	}
	a.options["slurm_gres"] = "gpu:1 --wrap=x"
	if _, err := e.sbatchArgs(a, 2); err == nil {
		t.Error("an invalid slurm_gres was accepted")
	}
}

func TestCheckSlurmOptions(t *testing.T) {
	cfg := &config.Server{Executor: config.ExecutorSlurm, Slurm: config.Slurm{OptionsFromJob: []string{"slurm_mem_mb"}}}
	for opts, want := range map[*map[string]string]string{
		{"slurm_mem_mb": "2048", "other": "x"}: "",
		{"slurm_partition": "big"}:             "option slurm_partition is not allowed by this server (SLURM_OPTIONS_FROM_JOB)",
		{"slurm_mem_mb": "0"}:                  "option slurm_mem_mb must be a whole number from 1 to 16777216",
		{"slurm_mem_mb": "1;reboot"}:           "option slurm_mem_mb must be a whole number from 1 to 16777216",
	} {
		err := checkSlurmOptions(cfg, *opts)
		if got := ""; err != nil {
			got = err.Error()
			if got != want {
				t.Errorf("checkSlurmOptions(%v) = %q, want %q", *opts, got, want)
			}
		} else if want != "" {
			t.Errorf("checkSlurmOptions(%v) = nil, want %q", *opts, want)
		}
	}
	if err := checkSlurmOptions(&config.Server{Executor: config.ExecutorLocal}, map[string]string{"slurm_partition": "x"}); err != nil {
		t.Errorf("the local executor refused a slurm option: %v", err)
	}
}

// TestSlurmSubmitRetriesWhileControllerAway: sbatch failing because the
// controller cannot be reached is tried again (after checking by name that
// the job did not get in) instead of failing the job; sbatch refusing the
// job fails it with Slurm's message.
func TestSlurmSubmitRetriesWhileControllerAway(t *testing.T) {
	dir := t.TempDir()
	up, count := filepath.Join(dir, "up"), filepath.Join(dir, "count")
	e := testSlurmExecutor(t, map[string]string{
		"sbatch": `cat >/dev/null; echo x >>` + count + `; [ -e ` + up + ` ] || { echo "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)" >&2; exit 1; }; echo 77`,
		"squeue": `exit 0`,
	}, nil)
	store := e.store
	j, _, err := store.Create(t.Context(), &jobs.Job{})
	if err == nil {
		j, err = store.Claim(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	a := attempt{jobID: j.ID, n: 1, log: slog.New(slog.DiscardHandler)}
	go func() {
		for {
			if b, _ := os.ReadFile(count); len(b) >= 4 { // two tries failed
				os.WriteFile(up, nil, 0o644)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	id, o := e.submit(ctx, a)
	if id != "77" {
		t.Fatalf("submit = %q, %+v; want 77 once the controller is back", id, o)
	}
	if p, err := store.GetPlacement(t.Context(), j.ID); err != nil || p.Ref != "77" {
		t.Errorf("placement %+v, %v", p, err)
	}

	e = testSlurmExecutor(t, map[string]string{
		"sbatch": `cat >/dev/null; echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1`,
	}, nil)
	if id, o := e.submit(ctx, attempt{jobID: "j", n: 1, log: slog.New(slog.DiscardHandler)}); id != "" || o.end != failed ||
		o.msg != "Slurm refused the job: Batch job submission failed: Invalid partition name specified" {
		t.Errorf("submit refused = %q, %+v", id, o)
	}
}

// TestSlurmFindEarlierSkipsDecided: a crash after an attempt's end was
// decided (its files gone) but before the store recorded the job's end
// re-runs the job: the ended Slurm job found by its name is not attached
// to. One whose wrapper files are still there is.
func TestSlurmFindEarlierSkipsDecided(t *testing.T) {
	e := testSlurmExecutor(t, nil, nil)
	var ids []string
	for range 2 {
		_, _, err := e.store.Create(t.Context(), &jobs.Job{})
		var j *jobs.Job
		if err == nil {
			j, err = e.store.Claim(t.Context())
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	decided, running := ids[0], ids[1]
	fake := "#!/bin/sh\necho '5|COMPLETED|None|recon-" + decided + "-1'; echo '6|RUNNING|None|recon-" + running + "-1'\n"
	if err := os.WriteFile(e.cli.prefix+"squeue", []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if p, found, err := e.findEarlier(t.Context(), attempt{jobID: decided, n: 2, log: log}); err != nil || found {
		t.Errorf("findEarlier for a decided attempt = %+v, %v, %v; want none", p, found, err)
	}
	os.MkdirAll(e.ctlDir(decided, 1), 0o755)
	if p, found, err := e.findEarlier(t.Context(), attempt{jobID: decided, n: 2, log: log}); err != nil || !found || p.slurmID != "5" || p.n != 1 {
		t.Errorf("findEarlier with the wrapper's files = %+v, %v, %v; want Slurm job 5, attempt 1", p, found, err)
	}
	if p, found, err := e.findEarlier(t.Context(), attempt{jobID: running, n: 2, log: log}); err != nil || !found || p.slurmID != "6" {
		t.Errorf("findEarlier for a running Slurm job = %+v, %v, %v; want Slurm job 6", p, found, err)
	}
}

// TestSlurmLogFilesBounded: a script that floods its stdout (kept by Slurm
// in a file on the shared filesystem, not drained through a pipe) is
// stopped once its stdout and stderr pass the limit, and the attempt fails
// with its output removed.
func TestSlurmLogFilesBounded(t *testing.T) {
	dir := t.TempDir()
	cancelled := filepath.Join(dir, "cancelled")
	e := testSlurmExecutor(t, map[string]string{
		"squeue":  `if [ -e ` + cancelled + ` ]; then echo '9|CANCELLED|None|recon-j-1'; else echo '9|RUNNING|None|recon-j-1'; fi`,
		"scancel": `touch ` + cancelled,
	}, nil)
	e.maxLogFile = 1 << 20
	a := attempt{jobID: "j", n: 1, log: slog.New(slog.DiscardHandler)}
	ctl, work := e.ctlDir("j", 1), e.attemptDir("j", 1)
	os.MkdirAll(ctl, 0o755)
	os.MkdirAll(work, 0o700)
	if err := os.WriteFile(filepath.Join(ctl, "stdout"), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	o := e.follow(ctx, a, a.log, earlier{n: 1, slurmID: "9"})
	if o.end != failed || !strings.Contains(o.msg, "wrote more than 1048576 bytes to its standard output and error") {
		t.Errorf("outcome %+v, want failed for the output flood", o)
	}
	if _, err := os.Stat(cancelled); err != nil {
		t.Errorf("the Slurm job was not cancelled: %v", err)
	}
	for _, d := range []string{ctl, work} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", d, err)
		}
	}
}
