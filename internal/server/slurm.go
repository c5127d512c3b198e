package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/runner"
)

// Limits and names of the Slurm executor.
const (
	// slurmJobPrefix starts the name of every Slurm job of recon:
	// recon-<job id>-<attempt>.
	slurmJobPrefix = "recon-"
	// slurmCtlPrefix names the directory of one attempt's batch wrapper
	// files (.slurm-<job id>-<attempt>: its stdout, stderr, started and
	// exit), beside the attempt's output directory, on the shared
	// filesystem.
	slurmCtlPrefix = ".slurm-"
	// slurmStopWait bounds how long a stop waits for Slurm to report a
	// cancelled job ended, after KILL_GRACE_SECONDS.
	slurmStopWait = 2 * time.Minute
	// slurmErrorLogEvery spaces the log records of a controller that does
	// not answer.
	slurmErrorLogEvery = time.Minute
	// maxSlurmLogFileBytes bounds what a script run by Slurm may write to
	// its stdout and stderr together: Slurm keeps them in files beside
	// the job's output until the job ends.
	maxSlurmLogFileBytes = 1 << 30
)

// slurmExecutor runs each attempt as a Slurm batch job, through the
// command-line tools (slurmcli.go). The batch wrapper it submits runs the
// script exactly as the local executor does (SCRIPT INPUT_DIR --output-dir
// OUTPUT_DIR, the same environment, plus Slurm's SLURM_* variables) and
// records the script's exit status in files of its own, so that the end of
// a job is decided from them even after Slurm has forgotten the job.
//
// Unlike the local executor, it leaves its attempts running when the
// server stops (only an administrator's cancel and the output watch end
// them): the Slurm job id is in the store (jobs.Placement), and the next
// run of the server attaches to the job again instead of submitting it
// twice. A crash between sbatch and recording the id is covered by the job
// name, recon-<job id>-<attempt>, which the server looks up.
type slurmExecutor struct {
	cfg       *config.Server
	log       *slog.Logger
	store     *jobs.Store
	cli       *slurmCLI
	poll      *slurmPoller
	killGrace time.Duration
	probe     slurmProbe
	// maxLogFile is maxSlurmLogFileBytes; tests lower it.
	maxLogFile int64
	// env is the server's variables for the script (scriptEnv), as the
	// local executor passes them.
	env []string

	mu       sync.Mutex
	inflight map[string]*slurmInflight // by recon job id
}

// slurmInflight is what the executor last heard of one attempt.
type slurmInflight struct {
	slurmID string
	state   string
	reason  string
}

func newSlurmExecutor(cfg *config.Server, log *slog.Logger, store *jobs.Store, killGrace time.Duration) *slurmExecutor {
	cli := &slurmCLI{}
	return &slurmExecutor{cfg: cfg, log: log, store: store, cli: cli, killGrace: killGrace, maxLogFile: maxSlurmLogFileBytes, env: scriptEnv(cfg, log),
		poll: newSlurmPoller(cli), inflight: map[string]*slurmInflight{}, probe: slurmProbe{ready: make(chan struct{})}}
}

func (e *slurmExecutor) outputDir(id string) string { return filepath.Join(e.cfg.OutputBaseDir, id) }
func (e *slurmExecutor) attemptDir(id string, n int) string {
	return filepath.Join(e.cfg.OutputBaseDir, attemptPrefix+id+"-"+strconv.Itoa(n))
}
func (e *slurmExecutor) ctlDir(id string, n int) string {
	return filepath.Join(e.cfg.OutputBaseDir, slurmCtlPrefix+id+"-"+strconv.Itoa(n))
}
func slurmJobName(id string, n int) string { return slurmJobPrefix + id + "-" + strconv.Itoa(n) }

// where reports the Slurm job of a recon job and its last known state.
func (e *slurmExecutor) where(id string) (slurmID, state, reason string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.inflight[id]
	if f == nil {
		return "", "", "", false
	}
	return f.slurmID, f.state, f.reason, true
}

func (e *slurmExecutor) setInflight(id, slurmID, state, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if slurmID == "" {
		delete(e.inflight, id)
		return
	}
	e.inflight[id] = &slurmInflight{slurmID: slurmID, state: state, reason: reason}
}

// recover checks that the tools are there, then ends the Slurm jobs of
// recon jobs that have ended meanwhile (failed by the store for too many
// attempts) and removes the files of attempts no job will attach to
// again. Attempts of queued and running jobs are left alone: run attaches
// to them.
func (e *slurmExecutor) recover(ctx context.Context) error {
	if _, err := osLookPath(e.cli.prefix + "sbatch"); err != nil {
		return fmt.Errorf("EXECUTOR = slurm: %w (install slurm-client, or put sbatch in PATH)", err)
	}
	removeProbeFiles(e.cfg.InputBaseDir, e.cfg.OutputBaseDir)
	ps, err := e.store.Placements(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		j, err := e.store.Get(ctx, p.JobID)
		if err == nil && !j.State.Terminal() {
			continue
		}
		e.log.Warn("cancelling the Slurm job of a job that has ended", "job_id", p.JobID, "slurm_job_id", p.Ref)
		if err := e.cli.cancel(ctx, p.Ref); err != nil {
			e.log.Error("cancel the Slurm job of a job that has ended", "job_id", p.JobID, "slurm_job_id", p.Ref, "err", err)
		}
		if err := e.store.ClearPlacement(ctx, p.JobID); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(e.cfg.OutputBaseDir)
	if err != nil {
		return fmt.Errorf("read RECON_JOB_OUTPUT_BASE_DIR: %w", err)
	}
	for _, ent := range entries {
		name := ent.Name()
		rest, ok := strings.CutPrefix(name, slurmCtlPrefix)
		if !ok {
			rest, ok = strings.CutPrefix(name, attemptPrefix)
		}
		if !ok {
			continue
		}
		id := rest
		if i := strings.LastIndexByte(rest, '-'); i > 0 {
			id = rest[:i]
		}
		j, err := e.store.Get(ctx, id)
		if err == nil && !j.State.Terminal() {
			continue
		}
		e.log.Info("removing the files of an ended attempt", "dir", name)
		os.RemoveAll(filepath.Join(e.cfg.OutputBaseDir, name))
	}
	return nil
}

// osLookPath is exec.LookPath, for tests to see through.
var osLookPath = lookPath

// held keeps workers from taking jobs until the probe job has shown that
// the compute nodes see the server's directories.
func (e *slurmExecutor) held() (bool, string, <-chan struct{}) {
	st := e.probe.get()
	if st.ok {
		return false, "", nil
	}
	return true, "waiting for the Slurm probe job: " + st.text, e.probe.ready
}

// checkOptions refuses Slurm job options the server does not let clients
// set (SLURM_OPTIONS_FROM_JOB), and values those options cannot take.
func checkSlurmOptions(cfg *config.Server, opts map[string]string) error {
	if cfg.Executor != config.ExecutorSlurm {
		return nil
	}
	for _, name := range config.SlurmJobOptions() {
		v, set := opts[name]
		if !set {
			continue
		}
		if !slices.Contains(cfg.Slurm.OptionsFromJob, name) {
			return fmt.Errorf("option %s is not allowed by this server (SLURM_OPTIONS_FROM_JOB)", name)
		}
		if _, err := config.CheckSlurmJobOption(name, v); err != nil {
			return fmt.Errorf("option %s %v", name, err)
		}
	}
	return nil
}

// sbatchArgs are the options of one attempt's sbatch: the fixed ones that
// recon relies on, then the resources from the keys and the allowed job
// options.
func (e *slurmExecutor) sbatchArgs(a attempt, n int) ([]string, error) {
	c := e.cfg.Slurm
	ctl := e.ctlDir(a.jobID, n)
	args := []string{
		"--job-name=" + slurmJobName(a.jobID, n),
		"--no-requeue",
		"--chdir=" + ctl,
		"--output=" + filepath.Join(ctl, "stdout"),
		"--error=" + filepath.Join(ctl, "stderr"),
	}
	partition, gres := c.Partition, c.GRES
	minutes, mem := c.TimeLimitMinutes, c.MemPerJobMB
	if minutes == 0 && e.cfg.JobTimeout > 0 {
		minutes = int((e.cfg.JobTimeout+time.Minute-1)/time.Minute) + 1
	}
	for _, name := range c.OptionsFromJob {
		v, set := a.options[name]
		if !set {
			continue
		}
		v, err := config.CheckSlurmJobOption(name, v)
		if err != nil {
			return nil, fmt.Errorf("option %s %v", name, err)
		}
		switch name {
		case config.JobOptSlurmGRES:
			gres = v
		case config.JobOptSlurmPartition:
			partition = v
		case config.JobOptSlurmTimeLimit:
			minutes, _ = strconv.Atoi(v)
		case config.JobOptSlurmMemMB:
			mem, _ = strconv.Atoi(v)
		}
	}
	add := func(opt, v string) {
		if v != "" && v != "0" {
			args = append(args, "--"+opt+"="+v)
		}
	}
	add("partition", partition)
	add("account", c.Account)
	add("qos", c.QOS)
	add("time", strconv.Itoa(minutes))
	add("cpus-per-task", strconv.Itoa(c.CPUsPerJob))
	add("mem", strconv.Itoa(mem))
	add("gres", gres)
	return append(args, c.ExtraArgs...), nil
}

// sbatchEnv is the environment sbatch runs in, which Slurm copies into the
// job: the allow-listed variables the script may see, and the SLURM_*
// variables that find the cluster. Nothing else of the server's
// environment reaches the controller.
func sbatchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SLURM_") || slices.Contains(runner.EnvAllowList, name) {
			env = append(env, kv)
		}
	}
	return env
}

// wrapperScript is the batch script of one attempt. It records that it
// started (with the Slurm job id) and the script's exit status in ctl, with
// shell builtins only (a process start is a good part of a trivial job's
// time; the files are read only once Slurm reports the job ended, and one
// cut short reads as not recorded), and runs the script in
// the local executor's environment: the allow-listed variables, the job's
// RECON_* variables, and Slurm's SLURM_* ones. Every value is quoted as
// $'...' with every byte outside printable ASCII escaped, so the script
// text is plain ASCII whatever the options hold.
func (e *slurmExecutor) wrapperScript(a attempt, n int) (string, error) {
	in := filepath.Join(e.cfg.InputBaseDir, a.jobID)
	out, ctl := e.attemptDir(a.jobID, n), e.ctlDir(a.jobID, n)
	opts, err := runner.OptionsEnv(a.options)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# recon batch wrapper: job %s, attempt %d\n", a.jobID, n)
	fmt.Fprintf(&b, "ctl=%s\n", shellQuote(ctl))
	b.WriteString(`printf '%s\n' "$SLURM_JOB_ID" >"$ctl/started" || exit 111` + "\n")
	b.WriteString(`for v in $(compgen -e); do case $v in SLURM_*|SLURMD_*) ;; *) unset "$v" 2>/dev/null ;; esac; done` + "\n")
	for _, name := range runner.EnvAllowList {
		v, ok := os.LookupEnv(name)
		if name == "PATH" && (!ok || v == "") {
			v, ok = runner.DefaultPATH, true
		}
		if ok && !strings.ContainsRune(v, 0) {
			fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(v))
		}
	}
	vars := append([]string{"RECON_JOB_ID=" + a.jobID, "RECON_INPUT_DIR=" + in, "RECON_OUTPUT_DIR=" + out}, e.env...)
	vars = append(vars, opts...)
	for _, kv := range vars {
		name, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(v))
	}
	fmt.Fprintf(&b, "cd %s || exit 112\n", shellQuote(in))
	fmt.Fprintf(&b, "%s %s --output-dir %s\n", shellQuote(e.cfg.ScriptPath), shellQuote(in), shellQuote(out))
	b.WriteString("st=$?\n")
	b.WriteString(`printf '%s\n' "$st" >"$ctl/exit"` + "\n")
	b.WriteString("exit $st\n")
	return b.String(), nil
}

// shellQuote quotes s for bash as $'...', escaping every byte that is not
// printable ASCII, and ' and \.
func shellQuote(s string) string {
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// earlier is an attempt of a job that an earlier run of the server handed
// to Slurm.
type earlier struct {
	n       int    // its attempt number
	slurmID string // "" when only its files are left
}

// findEarlier looks for an attempt of job a.jobID that is already in
// Slurm's hands: the placement in the store, else a Slurm job by its name
// (the server stopped between sbatch and recording the id), else the
// wrapper's files of an attempt that ended. ok is false when there is
// none, and the attempt must be submitted.
func (e *slurmExecutor) findEarlier(ctx context.Context, a attempt) (earlier, bool, error) {
	p, err := e.store.GetPlacement(ctx, a.jobID)
	if err == nil {
		return earlier{n: p.Attempt, slurmID: p.Ref}, true, nil
	}
	if !errors.Is(err, jobs.ErrNotFound) {
		return earlier{}, false, err
	}
	if a.n > 1 {
		names := make([]string, 0, a.n)
		for k := 1; k <= a.n; k++ {
			names = append(names, slurmJobName(a.jobID, k))
		}
		found, err := e.cli.findByName(ctx, names)
		if err != nil {
			return earlier{}, false, err
		}
		best := earlier{}
		for _, j := range found {
			k, _ := strconv.Atoi(strings.TrimPrefix(j.Name, slurmJobPrefix+a.jobID+"-"))
			if _, err := os.Stat(e.ctlDir(a.jobID, k)); err != nil && slurmTerminal(j.State) {
				continue // ended and already decided: its files are gone
			}
			if k > best.n {
				best = earlier{n: k, slurmID: j.ID}
			}
		}
		if best.n > 0 {
			a.log.Warn("found the job's Slurm job by its name: attaching to it", "slurm_job_id", best.slurmID, "slurm_attempt", best.n)
			if err := e.store.SetPlacement(ctx, a.jobID, best.n, best.slurmID); err != nil {
				return earlier{}, false, err
			}
			return best, true, nil
		}
	}
	for k := a.n; k >= 1; k-- {
		if started, _ := os.ReadFile(filepath.Join(e.ctlDir(a.jobID, k), "started")); len(started) > 0 {
			return earlier{n: k, slurmID: strings.TrimSpace(string(started))}, true, nil
		}
	}
	return earlier{}, false, nil
}

// run runs one attempt as a Slurm job: it attaches to the job's Slurm job
// when an earlier run of the server submitted one, else submits it; then
// follows it to its end.
func (e *slurmExecutor) run(ctx context.Context, a attempt) outcome {
	var (
		prev  earlier
		found bool
		err   error
	)
	for {
		prev, found, err = e.findEarlier(ctx, a)
		if err == nil {
			break
		}
		a.log.Warn("cannot ask Slurm about the job's earlier attempts; retrying", "err", err)
		if !sleepCtx(ctx, e.cfg.Slurm.PollInterval*4) {
			return e.interrupted(ctx, a, earlier{}, nil, nil)
		}
	}
	if !found {
		prev = earlier{n: a.n}
		for k := 1; k <= a.n; k++ { // what attempts that never reached Slurm left
			os.RemoveAll(e.ctlDir(a.jobID, k))
			os.RemoveAll(e.attemptDir(a.jobID, k))
		}
		id, o := e.submit(ctx, a)
		if id == "" {
			return o
		}
		prev.slurmID = id
	} else {
		a.log.Info("attaching to the job's Slurm job", "slurm_job_id", prev.slurmID, "slurm_attempt", prev.n)
	}
	log := a.log.With("slurm_job_id", prev.slurmID)
	e.setInflight(a.jobID, prev.slurmID, "", "")
	defer e.setInflight(a.jobID, "", "", "")
	return e.follow(ctx, a, log, prev)
}

// submit creates the attempt's directories and submits it. On failure it
// returns "" and the outcome to report.
func (e *slurmExecutor) submit(ctx context.Context, a attempt) (string, outcome) {
	ctl, work := e.ctlDir(a.jobID, a.n), e.attemptDir(a.jobID, a.n)
	args, err := e.sbatchArgs(a, a.n)
	if err != nil {
		return "", failure(err.Error(), nil)
	}
	script, err := e.wrapperScript(a, a.n)
	if err == nil {
		err = resetDir(ctl)
	}
	if err == nil {
		err = resetDir(work)
	}
	if err == nil {
		err = os.Chmod(ctl, 0o755) // slurmd writes stdout and stderr here
	}
	if err != nil {
		a.log.Error("cannot prepare the Slurm job", "err", err)
		os.RemoveAll(ctl)
		os.RemoveAll(work)
		return "", failure("the server could not prepare the job's Slurm job; see the server log", nil)
	}
	name := slurmJobName(a.jobID, a.n)
	var id string
	for {
		var err error
		id, err = e.cli.submit(context.WithoutCancel(ctx), args, script)
		if err == nil {
			break
		}
		if !transientSlurmError(err) {
			a.log.Error("sbatch failed", "err", err)
			os.RemoveAll(ctl)
			os.RemoveAll(work)
			return "", failure("Slurm refused the job: "+safeSlurmMessage(err), nil)
		}
		// The controller is away: try again until it is back (or the
		// server stops), after checking that the job did not reach it.
		a.log.Warn("sbatch could not reach the Slurm controller; retrying", "err", err)
		if !sleepCtx(ctx, max(e.cfg.Slurm.PollInterval*4, time.Second)) {
			os.RemoveAll(ctl)
			os.RemoveAll(work)
			return "", outcome{end: stopped}
		}
		if found, err := e.cli.findByName(ctx, []string{name}); err == nil && len(found) > 0 {
			id = found[0].ID
			break
		}
	}
	a.log.Info("submitted to Slurm", "slurm_job_id", id, "slurm_job_name", name)
	if err := e.store.SetPlacement(context.WithoutCancel(ctx), a.jobID, a.n, id); err != nil {
		// The job name still finds it after a restart.
		a.log.Error("record the Slurm job id", "slurm_job_id", id, "err", err)
	}
	return id, outcome{}
}

// transientSlurmError reports whether a tool failed because the controller
// could not be reached or was busy, so that the same command may work
// later.
func transientSlurmError(err error) bool {
	msg := err.Error()
	for _, s := range []string{"Unable to contact slurm controller", "Socket timed out", "temporarily unable", "Zero Bytes were transmitted", "Connection refused", "signal: killed", "deadline exceeded"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// safeSlurmMessage is the part of an error of the Slurm tools that a client
// may read: Slurm's own message, without the server's paths.
func safeSlurmMessage(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "error: "); i >= 0 {
		msg = msg[i+len("error: "):]
	}
	if strings.Contains(msg, "/") {
		return "see the server log"
	}
	return msg
}

// follow waits for the attempt's Slurm job to end, relaying its output to
// the log, ending it at JOB_TIMEOUT_SECONDS, on an administrator's cancel
// and when its output grows too large; on the server's stop it leaves the
// job running.
func (e *slurmExecutor) follow(ctx context.Context, a attempt, log *slog.Logger, p earlier) outcome {
	ctl, work := e.ctlDir(a.jobID, p.n), e.attemptDir(a.jobID, p.n)
	tail := newSlurmOutput(log.With("worker", a.worker), ctl)
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	watched := (&localExecutor{cfg: e.cfg}).watchOutput(runCtx, stop, work)
	var running time.Time
	if fi, err := os.Stat(filepath.Join(ctl, "started")); err == nil {
		running = fi.ModTime()
	}
	var lastErr time.Time
	for {
		tail.relay()
		if runCtx.Err() != nil {
			return e.interrupted(ctx, a, p, tail, watched())
		}
		if n := tail.size(); n > e.maxLogFile {
			// Slurm writes the script's stdout and stderr to files on the
			// shared filesystem, where a local script's go through pipes
			// and are drained: bound them as the output is bounded.
			stop(&outputStop{msg: fmt.Sprintf("the script wrote more than %d bytes to its standard output and error (%d): the script was stopped and its output removed", e.maxLogFile, n)})
			continue
		}
		j, known, err := e.poll.get(runCtx, p.slurmID)
		switch {
		case runCtx.Err() != nil:
			continue
		case err != nil:
			if time.Since(lastErr) > slurmErrorLogEvery {
				log.Warn("cannot ask Slurm about the job; retrying", "err", err)
				lastErr = time.Now()
			}
		case !known || slurmTerminal(j.State):
			watched()
			tail.relay()
			return e.ended(context.WithoutCancel(ctx), a, log, p, tail, known, j)
		default:
			e.setInflight(a.jobID, p.slurmID, j.State, j.Reason)
			if j.State == "RUNNING" && running.IsZero() {
				running = time.Now()
				log.Info("running in Slurm")
			}
			if t := e.cfg.JobTimeout; t > 0 && !running.IsZero() && time.Since(running) > t {
				log.Warn("job timed out (JOB_TIMEOUT_SECONDS): cancelling its Slurm job")
				watched()
				if err := e.stopSlurm(context.WithoutCancel(ctx), log, p.slurmID); err != nil {
					return failure("the job timed out, and its Slurm job could not be confirmed ended; see the server log", nil)
				}
				stderr := tail.stderrTail()
				// As for a local script that timed out: its output is the
				// job's (KEEP_FAILED_OUTPUTS decides its fate).
				if err := (&localExecutor{cfg: e.cfg}).promoteAttempt(a.jobID, work); err != nil {
					log.Error("cannot keep the job's output", "err", err)
				}
				e.cleanup(context.WithoutCancel(ctx), a, p, true)
				exit := -1
				return outcome{end: exited, exit: &exit, signal: "terminated", timedOut: true, stderrTail: stderr}
			}
		}
		if !sleepCtx(runCtx, e.poll.wait(e.cfg.Slurm.PollInterval)) {
			continue
		}
	}
}

// interrupted handles a done ctx: an administrator's cancel or the output
// watch (over) end the Slurm job; the server's stop leaves it running.
// tail is nil before the job was submitted.
func (e *slurmExecutor) interrupted(ctx context.Context, a attempt, p earlier, tail *slurmOutput, over *outputStop) outcome {
	cancelled := errors.Is(context.Cause(ctx), errCancelled)
	if p.slurmID == "" || (!cancelled && over == nil) {
		if p.slurmID != "" {
			a.log.Info("server stopping: the Slurm job keeps running, and the next start attaches to it", "slurm_job_id", p.slurmID)
		}
		return outcome{end: stopped}
	}
	log := a.log.With("slurm_job_id", p.slurmID)
	bg := context.WithoutCancel(ctx)
	err := e.stopSlurm(bg, log, p.slurmID)
	if tail != nil {
		tail.relay()
	}
	if err != nil {
		return failure("the job's Slurm job could not be confirmed ended; see the server log", nil)
	}
	e.cleanup(bg, a, p, true)
	if over != nil {
		return failure(over.msg, nil)
	}
	return outcome{end: stopped}
}

// stopSlurm ends a Slurm job: SIGTERM to all its processes, then, after
// KILL_GRACE_SECONDS if it still runs, scancel; it returns once Slurm
// reports the job ended (nothing of it runs on its node any more).
func (e *slurmExecutor) stopSlurm(ctx context.Context, log *slog.Logger, id string) error {
	j, known, err := e.poll.get(ctx, id)
	if err == nil && (!known || slurmTerminal(j.State)) {
		return nil
	}
	if err == nil && j.State == "RUNNING" {
		if err := e.cli.signal(ctx, id, "TERM"); err != nil {
			log.Warn("signal the Slurm job", "err", err)
		}
		if e.waitEnded(ctx, id, e.killGrace) {
			log.Info("Slurm job ended after SIGTERM")
			return nil
		}
	}
	if err := e.cli.cancel(ctx, id); err != nil {
		log.Warn("scancel", "err", err)
	}
	if !e.waitEnded(ctx, id, slurmStopWait) {
		log.Error("Slurm does not report the cancelled job ended", "waited", slurmStopWait)
		return errors.New("slurm job not ended")
	}
	log.Info("Slurm job cancelled")
	return nil
}

// waitEnded polls until Slurm reports job id ended, or d passes.
func (e *slurmExecutor) waitEnded(ctx context.Context, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		j, known, err := e.poll.get(ctx, id)
		if err == nil && (!known || slurmTerminal(j.State)) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		sleepCtx(ctx, min(e.cfg.Slurm.PollInterval, 100*time.Millisecond))
	}
}

// ended decides how an attempt whose Slurm job is over (or forgotten by
// Slurm) ended: from the wrapper's exit file when the script finished,
// else from Slurm's state and reason.
func (e *slurmExecutor) ended(ctx context.Context, a attempt, log *slog.Logger, p earlier, tail *slurmOutput, known bool, last slurmJob) outcome {
	ctl := e.ctlDir(a.jobID, p.n)
	raw, exitErr := os.ReadFile(filepath.Join(ctl, "exit"))
	st, convErr := strconv.Atoi(strings.TrimSpace(string(raw)))
	haveExit := exitErr == nil && convErr == nil
	// squeue's answer says how the job ended; scontrol adds why, needed
	// unless the script's own end is recorded and Slurm agrees.
	sj := last
	if known && !(haveExit && last.State == "COMPLETED") {
		if j, err := e.cli.show(ctx, p.slurmID); err != nil {
			log.Warn("cannot read the Slurm job's end", "err", err)
		} else {
			sj = j
		}
	}
	log.Info("Slurm job ended", "slurm_state", sj.State, "slurm_reason", sj.Reason, "slurm_exit", sj.Exit, "exit_file", haveExit)
	stderr := tail.stderrTail() // before cleanup removes the files
	switch sj.State {
	case "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "CANCELLED", "REVOKED":
		// Slurm ended it: whatever the wrapper wrote, the script did not
		// finish its own way.
		e.cleanup(ctx, a, p, true)
		var exit *int
		if haveExit {
			exit = &st
		}
		o := failure(slurmEndMessage(p.slurmID, sj), exit)
		o.stderrTail = stderr
		return o
	}
	if !haveExit {
		e.cleanup(ctx, a, p, true)
		if !known {
			return failure(fmt.Sprintf("Slurm job %s has ended and is no longer known to Slurm, and the script's exit status was not recorded", p.slurmID), nil)
		}
		return failure(slurmEndMessage(p.slurmID, sj)+" before the script's exit status was recorded", nil)
	}
	work := e.attemptDir(a.jobID, p.n)
	_, werr := os.Stat(work)
	_, oerr := os.Stat(e.outputDir(a.jobID))
	if werr != nil && oerr == nil {
		// Promoted already, by a run of the server that stopped before it
		// recorded the job's end.
	} else if err := (&localExecutor{cfg: e.cfg}).promoteAttempt(a.jobID, work); err != nil {
		log.Error("cannot keep the job's output", "err", err)
		e.cleanup(ctx, a, p, true)
		return failure("the server could not keep the job's output; see the server log", nil)
	}
	e.cleanup(ctx, a, p, false)
	return outcome{end: exited, exit: &st, stderrTail: stderr}
}

// slurmEndMessage describes how Slurm ended a job, for the job's error.
func slurmEndMessage(id string, j slurmJob) string {
	state := j.State
	if state == "" {
		state = "UNKNOWN"
	}
	msg := fmt.Sprintf("Slurm job %s ended %s", id, state)
	if j.Reason != "" && j.Reason != "None" {
		msg += " (" + j.Reason + ")"
	}
	switch state {
	case "TIMEOUT":
		msg += ": it reached its Slurm time limit"
	case "OUT_OF_MEMORY":
		msg += ": it ran out of memory"
	case "NODE_FAIL":
		msg += ": its node failed"
	case "PREEMPTED":
		msg += ": it was preempted"
	}
	return msg
}

// cleanup removes an attempt's wrapper files (and its output when
// dropOutput) and forgets its placement.
func (e *slurmExecutor) cleanup(ctx context.Context, a attempt, p earlier, dropOutput bool) {
	// The placement first: a crash before the files go leaves them to be
	// found (and decided from) by the job's next run.
	if err := e.store.ClearPlacement(ctx, a.jobID); err != nil {
		a.log.Warn("forget the Slurm job id", "err", err)
	}
	os.RemoveAll(e.ctlDir(a.jobID, p.n))
	if dropOutput {
		os.RemoveAll(e.attemptDir(a.jobID, p.n))
	}
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// release ends the Slurm job a queued job would have attached to (one
// left running by an earlier run of the server) when the job is cancelled
// before it ran again, and removes its files.
func (e *slurmExecutor) release(ctx context.Context, jobID string) {
	p, err := e.store.GetPlacement(ctx, jobID)
	if err != nil {
		return
	}
	log := e.log.With("job_id", jobID, "slurm_job_id", p.Ref)
	if err := e.stopSlurm(context.WithoutCancel(ctx), log, p.Ref); err != nil {
		log.Error("cancel the Slurm job of a cancelled job", "err", err)
	}
	e.cleanup(context.WithoutCancel(ctx), attempt{jobID: jobID, log: log}, earlier{n: p.Attempt, slurmID: p.Ref}, true)
}

// jobDetail says where a running job is when the Slurm executor holds
// it: "pending in Slurm: Resources", "running in Slurm job 42".
func (s *Server) jobDetail(j *jobs.Job) string {
	pl, ok := s.pool.exec.(placer)
	if !ok || j.State != jobs.Running {
		return ""
	}
	ref, state, reason, ok := pl.where(j.ID)
	switch {
	case !ok || state == "":
		return ""
	case state == "PENDING" && reason != "" && reason != "None":
		return "pending in Slurm: " + reason
	case state == "PENDING":
		return "pending in Slurm"
	}
	return strings.ToLower(state) + " in Slurm job " + ref
}

// executorStatus adds the executor and its probe to an admin status, and
// the SLURM_* keys to its settings.
func (s *Server) executorStatus(out *protocol.AdminStatus) {
	c := s.cfg
	out.Config["EXECUTOR"] = c.Executor
	e, ok := s.pool.exec.(*slurmExecutor)
	if !ok {
		return // the reply as before, for admin tools that predate the field
	}
	out.Executor = c.Executor
	st := e.probe.get()
	out.ExecutorCheck = "probe job " + st.text
	for k, v := range map[string]string{
		"SLURM_PARTITION": c.Slurm.Partition, "SLURM_ACCOUNT": c.Slurm.Account, "SLURM_QOS": c.Slurm.QOS,
		"SLURM_TIME_LIMIT_MINUTES": strconv.Itoa(c.Slurm.TimeLimitMinutes), "SLURM_CPUS_PER_JOB": strconv.Itoa(c.Slurm.CPUsPerJob),
		"SLURM_MEM_PER_JOB_MB": strconv.Itoa(c.Slurm.MemPerJobMB), "SLURM_GRES": c.Slurm.GRES,
		"SLURM_EXTRA_ARGS": strings.Join(c.Slurm.ExtraArgs, " "), "SLURM_POLL_INTERVAL_MS": strconv.FormatInt(c.Slurm.PollInterval.Milliseconds(), 10),
		"SLURM_OPTIONS_FROM_JOB": strings.Join(c.Slurm.OptionsFromJob, ","),
	} {
		out.Config[k] = v
	}
}
