// Package runner runs the site's reconstruction script for one job and
// collects the files it leaves in the job's output directory.
//
// Running the script is a security boundary. Run executes
//
//	SCRIPT INPUT_DIR --output-dir OUTPUT_DIR
//
// directly (no shell, explicit argv), with standard input from /dev/null, an
// environment built from an allow-list of the server's own environment plus
// the job's variables, in its own process group. Job options never become
// argv or shell text: they reach the script only as environment variables.
// Cancellation and timeouts end the whole process group.
//
// Every process of a run carries a marker in its environment (RECON_ATTEMPT,
// see package reap), which it keeps when it leaves the process group with
// setsid or is orphaned by a double fork; where the server may manage
// cgroup2, the script also starts in a cgroup of its own, which holds even a
// process that drops the marker. When the script exits, or is ended, Run
// kills every process that still carries its marker or is in its cgroup and
// logs each (pid, command): no process the script started outlives the run
// (without cgroups, short of one that replaces its whole environment). Run
// returns only once they are gone. After a crash of the server, KillStale
// finds and kills the processes of the runs it was doing, before their
// jobs run again.
//
// CollectResults walks the output directory through an os.Root and returns
// regular files only, each hashed with SHA-256 in one read; everything else
// (symbolic links, pipes, sockets, devices, hard-linked files, unsafe names)
// is skipped with a reason.
//
// The package knows nothing of the network: neither it nor what it
// imports uses a socket, the channel or the protocol (docs/ARCHITECTURE.md;
// TestImportRules at the module root checks it).
package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/options"
	"github.com/recon-mri/recon/internal/reap"
)

// Defaults and limits of Run.
const (
	// DefaultKillGrace is the time between SIGTERM and SIGKILL when a job
	// is cancelled or times out, used when Spec.KillGrace is 0.
	DefaultKillGrace = 10 * time.Second
	// DefaultMaxLogBytes caps, per stream, the script output passed to the
	// logger when Spec.MaxLogBytes is 0. Output beyond the cap is read and
	// counted, never stored.
	DefaultMaxLogBytes = 1 << 20
	// MaxLineBytes caps one logged line; the rest of a longer line is
	// dropped and the record marked truncated.
	MaxLineBytes = 4 << 10
	// StderrTailBytes caps Result.StderrTail.
	StderrTailBytes = 2 << 10

	// MaxOptions, MaxOptionKeyLen and MaxOptionValueBytes bound Spec.Options:
	// the limits of package options, which the protocol enforces too
	// before a job is queued.
	MaxOptions          = options.MaxCount
	MaxOptionKeyLen     = options.MaxKeyLen
	MaxOptionValueBytes = options.MaxValueBytes
	// MaxEnvStringBytes is Linux's MAX_ARG_STRLEN: execve fails (E2BIG)
	// when one "NAME=value" string of the environment, with its
	// terminating NUL, is longer. OptionsEnv refuses options that would
	// need a longer string, so they are refused with a clear error instead
	// of failing exec. (All of a job's option strings together stay under
	// 400 KiB, well below the total that execve accepts, ARG_MAX: 2 MiB
	// with the default 8 MiB stack.)
	MaxEnvStringBytes = 128 << 10
	// MaxOptionsJSONBytes caps RECON_OPTIONS_JSON: the longest JSON that
	// fits in one environment string.
	MaxOptionsJSONBytes = MaxEnvStringBytes - 1 - len(envOptionsJSON) - 1

	// DefaultPATH is the script's PATH when the server has none.
	DefaultPATH = "/usr/local/bin:/usr/bin:/bin"
)

// Names of the variables Run sets for the script.
const (
	envJobID       = "RECON_JOB_ID"
	envInputDir    = "RECON_INPUT_DIR"
	envOutputDir   = "RECON_OUTPUT_DIR"
	envOptionsJSON = "RECON_OPTIONS_JSON"
	envOptPrefix   = "RECON_OPT_"
	envAttempt     = reap.Env
)

// EnvAllowList names the variables of the server's own environment that the
// script inherits (when set): the search path, the user's identity and home,
// locale, time zone and temporary directory. Nothing else passes, so secrets
// in the server's environment never reach a script. PATH is DefaultPATH when
// the server has none.
var EnvAllowList = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

// Spec describes one run of the reconstruction script.
type Spec struct {
	// Script is the absolute path of the executable (RECON_SCRIPT_PATH).
	Script string
	// InputDir is the job's input directory, the script's first argument.
	InputDir string
	// OutputDir is passed as "--output-dir OUTPUT_DIR"; Run creates it with
	// mode 0700 if it is missing. Relative directories are made absolute.
	OutputDir string
	// Dir is the script's working directory; "" means InputDir.
	Dir string
	// JobID is exported as RECON_JOB_ID and attached to every log record.
	JobID string
	// Instance names the server that runs the job, and Attempt counts the
	// job's runs: with JobID they make the run's marker (see Marker), so
	// that KillStale(Instance) finds the processes of this run after a
	// crash. Instance must be non-empty for that, and must not contain
	// '.' or NUL; "" gives the run a random marker of its own.
	Instance string
	Attempt  int
	// Options become RECON_OPTIONS_JSON (a JSON object of all options) and
	// one RECON_OPT_<KEY upper-cased> per option, never argv. Keys must
	// match [A-Za-z0-9_]{1,64} and stay distinct when upper-cased; values
	// are at most MaxOptionValueBytes of any bytes but NUL. RECON_OPT_*
	// carry the exact bytes; in the JSON object, bytes that are not valid
	// UTF-8 are replaced by U+FFFD.
	Options map[string]string
	// Env holds more variables for the script, "NAME=value" each, set
	// after the job's own: the server's settings a script may use
	// (RECON_BIN, RECON_DICOM_UID_ROOT). A name must start with RECON_ and
	// not be one Run sets itself.
	Env []string
	// Timeout ends the script after this long; 0 means no timeout.
	Timeout time.Duration
	// KillGrace is the delay between SIGTERM and SIGKILL to the process
	// group on cancellation or timeout; 0 means DefaultKillGrace. It also
	// bounds how long Run waits for the script's output pipes to close
	// after the script has exited.
	KillGrace time.Duration
	// Logger receives one record per line of script output, with job_id and
	// stream ("stdout" or "stderr") attributes. nil discards output.
	Logger *slog.Logger
	// MaxLogBytes caps, per stream, the line bytes passed to Logger; 0
	// means DefaultMaxLogBytes. Output beyond it is drained and counted.
	MaxLogBytes int64
}

// Result is the outcome of a script that was started.
type Result struct {
	// ExitCode is the script's exit status, -1 when a signal ended it.
	ExitCode int
	// Signal names the signal that ended the script ("terminated",
	// "killed", ...), "" when it exited by itself.
	Signal string
	// TimedOut reports that Run ended the script because Spec.Timeout
	// passed.
	TimedOut bool
	// Cancelled reports that Run ended the script because ctx was done.
	Cancelled bool
	// StderrTail holds the last lines (at most StderrTailBytes, valid UTF-8)
	// of standard error, for the job's error message.
	StderrTail string
	// StdoutBytes and StderrBytes count all output, logged or not.
	StdoutBytes, StderrBytes int64
	// Duration is the time from start to exit.
	Duration time.Duration
}

// Success reports whether the script exited with status 0 by itself.
func (r Result) Success() bool {
	return r.ExitCode == 0 && r.Signal == "" && !r.TimedOut && !r.Cancelled
}

var errTimeout = errors.New("script timed out")

// Run runs the script described by s and waits for it and for every process
// it started to end. It returns an error when the script could not be
// started (invalid Spec, missing or non-executable script, output
// directory not creatable); how the script ended is in Result. It also
// returns one, wrapping ErrSurvivors, with the Result, when processes the
// script left could not be killed in time: then the output directory may
// still change and must not be used.
//
// When ctx is done or s.Timeout passes, Run sends SIGTERM to the script's
// process group and SIGKILL after s.KillGrace. When the script exits, every
// process left with the run's marker or in its cgroup, in the process
// group or not, is killed with SIGKILL and logged at Warn. Run returns once
// the script has been reaped and its output read (or, if a process that
// escaped all of these holds the output pipes open, KillGrace after the
// script's exit).
func Run(ctx context.Context, s Spec) (Result, error) {
	if err := s.check(); err != nil {
		return Result{}, err
	}
	inputDir, err := filepath.Abs(s.InputDir)
	if err != nil {
		return Result{}, fmt.Errorf("input dir: %w", err)
	}
	outputDir, err := filepath.Abs(s.OutputDir)
	if err != nil {
		return Result{}, fmt.Errorf("output dir: %w", err)
	}
	dir := inputDir
	if s.Dir != "" {
		if dir, err = filepath.Abs(s.Dir); err != nil {
			return Result{}, fmt.Errorf("working dir: %w", err)
		}
	}
	marker := s.marker()
	env, err := buildEnv(s, inputDir, outputDir, marker)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(outputDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("create output dir: %w", err)
	}

	grace := s.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	logMax := s.MaxLogBytes
	if logMax <= 0 {
		logMax = DefaultMaxLogBytes
	}
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("job_id", s.JobID)

	runCtx := ctx
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, s.Timeout, errTimeout)
		defer cancel()
	}

	stdout := newLineLogger(ctx, logger, "stdout", logMax, 0)
	stderr := newLineLogger(ctx, logger, "stderr", logMax, StderrTailBytes)

	// exited is set once the script's leader has exited; signalled once
	// Cancel has sent SIGTERM to a live group, and timedOut if the reason
	// was the timeout.
	var exited, signalled, timedOut atomic.Bool
	newCmd := func(grp *reap.Group) *exec.Cmd {
		c := exec.CommandContext(runCtx, s.Script, inputDir, "--output-dir", outputDir)
		c.Dir = dir
		c.Env = env
		c.Stdin = nil // /dev/null
		c.Stdout = stdout
		c.Stderr = stderr
		c.SysProcAttr = sysProcAttr()
		if grp != nil {
			inCgroup(c.SysProcAttr, grp.FD())
		}
		c.Cancel = func() error {
			if exited.Load() {
				return os.ErrProcessDone
			}
			signalled.Store(true)
			timedOut.Store(errors.Is(context.Cause(runCtx), errTimeout))
			// The leader is not reaped before the group is killed (see
			// below), so its pid still names this process group.
			if err := syscall.Kill(-c.Process.Pid, syscall.SIGTERM); err != nil {
				return os.ErrProcessDone
			}
			return nil
		}
		// After cancellation, exec sends SIGKILL to the leader WaitDelay
		// after Cancel; Run then kills the rest of the group. After a
		// normal exit, WaitDelay bounds the wait for pipes held open by
		// escaped processes.
		c.WaitDelay = grace
		return c
	}

	// Where it can, the run gets a cgroup of its own, which holds every
	// process it starts, also one that drops the marker.
	grp, err := reap.NewGroup(marker)
	if err != nil {
		logger.Debug("no cgroup for the run: its processes are found by their marker only", "err", err)
		grp = nil
	} else {
		defer func() {
			if _, err := grp.Kill(context.WithoutCancel(ctx)); err != nil {
				logger.Error("remove the run's cgroup", "err", err)
			}
		}()
	}

	// Pdeathsig (where supported) is tied to the thread that forks: keep
	// this goroutine on its thread until the script has been reaped.
	unlock := lockThread()
	defer unlock()

	start := time.Now()
	cmd := newCmd(grp)
	err = cmd.Start()
	if err != nil && grp != nil && runCtx.Err() == nil {
		// A kernel or sandbox that cannot start a process in a cgroup:
		// start it without.
		logger.Debug("cannot start the script in its cgroup", "err", err)
		cmd = newCmd(nil)
		err = cmd.Start()
	}
	if err != nil {
		if cerr := context.Cause(runCtx); cerr != nil {
			res := Result{ExitCode: -1, TimedOut: errors.Is(cerr, errTimeout), Cancelled: !errors.Is(cerr, errTimeout)}
			return res, fmt.Errorf("start script: %w", cerr)
		}
		return Result{}, fmt.Errorf("start script: %w", err)
	}
	pid := cmd.Process.Pid
	logger.Debug("script started", "pid", pid, "script", s.Script)

	// Wait for the leader to exit without reaping it, so that its pid
	// still names its process group while we kill what is left of it.
	var waitErr, leftErr error
	if leaderExited(pid) {
		exited.Store(true)
		leftErr = killLeftovers(ctx, logger, marker, grp)
		killGroup(pid)
		waitErr = cmd.Wait()
	} else {
		// No way to wait without reaping: kill the group right after
		// (a tiny pid reuse window remains).
		waitErr = cmd.Wait()
		exited.Store(true)
		killGroup(pid)
		leftErr = killLeftovers(ctx, logger, marker, grp)
	}
	duration := time.Since(start)
	stdout.flush()
	stderr.flush()

	res := Result{
		ExitCode:    -1,
		StderrTail:  stderr.tailString(),
		StdoutBytes: stdout.total,
		StderrBytes: stderr.total,
		Duration:    duration,
	}
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		logger.Warn("a process that escaped the run (it left the process group and dropped the marker) kept its output open; stopped reading it",
			"kill_grace", grace)
	}
	if st := cmd.ProcessState; st != nil {
		res.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = ws.Signal().String()
		}
	} else if waitErr != nil {
		return res, fmt.Errorf("wait for script: %w", waitErr)
	}
	if signalled.Load() {
		res.TimedOut = timedOut.Load()
		res.Cancelled = !res.TimedOut
	}
	stdout.summary()
	stderr.summary()
	return res, leftErr
}

// killGroup sends SIGKILL to every process of the group led by pid.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

func (s Spec) check() error {
	switch {
	case s.Script == "":
		return errors.New("no script path")
	case !filepath.IsAbs(s.Script):
		return fmt.Errorf("script path %q is not absolute", s.Script)
	case s.InputDir == "":
		return errors.New("no input dir")
	case s.OutputDir == "":
		return errors.New("no output dir")
	case strings.IndexByte(s.JobID, 0) >= 0:
		return errors.New("job id contains a NUL byte")
	case strings.ContainsAny(s.Instance, ".\x00"):
		return fmt.Errorf("instance %q contains '.' or a NUL byte", s.Instance)
	}
	for _, kv := range s.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "RECON_") || strings.HasPrefix(name, envOptPrefix) || strings.IndexByte(kv, 0) >= 0 ||
			slices.Contains([]string{envJobID, envInputDir, envOutputDir, envOptionsJSON, envAttempt}, name) {
			return fmt.Errorf("extra environment variable %q: want RECON_NAME=value, not one Run sets", name)
		}
	}
	return options.Check(s.Options)
}

// buildEnv returns the script's environment: the allow-listed variables of
// the server's environment, then the job's variables.
func buildEnv(s Spec, inputDir, outputDir, marker string) ([]string, error) {
	env := make([]string, 0, len(EnvAllowList)+5+len(s.Options))
	for _, name := range EnvAllowList {
		v, ok := os.LookupEnv(name)
		if name == "PATH" && (!ok || v == "") {
			v, ok = DefaultPATH, true
		}
		if ok && strings.IndexByte(v, 0) < 0 {
			env = append(env, name+"="+v)
		}
	}
	opts, err := optionsEnv(s.Options)
	if err != nil {
		return nil, err
	}
	env = append(env,
		envJobID+"="+s.JobID,
		envInputDir+"="+inputDir,
		envOutputDir+"="+outputDir,
		envAttempt+"="+marker,
	)
	return append(append(env, opts...), s.Env...), nil
}

// OptionsEnv returns the environment strings that carry opts to the
// script, exactly as Run sets them: RECON_OPTIONS_JSON, then one
// RECON_OPT_<KEY upper-cased> per option in key order. It fails when opts
// are not valid (see Spec.Options) or when a string would be longer than
// execve accepts (MaxEnvStringBytes). In JSON a control character or a
// byte that is not UTF-8 takes 6 bytes (\u0001, \ufffd), so options well
// within the protocol's caps can still be too long. A server calls it
// before it accepts a job, so that every job it queues can start.
func OptionsEnv(opts map[string]string) ([]string, error) {
	if err := options.Check(opts); err != nil {
		return nil, err
	}
	return optionsEnv(opts)
}

// optionsEnv is OptionsEnv for options that passed options.Check.
func optionsEnv(opts map[string]string) ([]string, error) {
	if opts == nil {
		opts = map[string]string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(opts); err != nil {
		return nil, fmt.Errorf("encode options: %w", err)
	}
	js := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(js) > MaxOptionsJSONBytes {
		return nil, fmt.Errorf("options are %d bytes as JSON (control characters and bytes that are not UTF-8 take 6 bytes each), at most %d fit in the script's environment variable %s",
			len(js), MaxOptionsJSONBytes, envOptionsJSON)
	}
	env := make([]string, 0, 1+len(opts))
	env = append(env, envOptionsJSON+"="+string(js))
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kv := envOptPrefix + strings.ToUpper(k) + "=" + opts[k]
		if len(kv)+1 > MaxEnvStringBytes { // not with values capped at MaxOptionValueBytes
			return nil, fmt.Errorf("option %s: %s%s would be %d bytes, at most %d fit in one environment variable",
				k, envOptPrefix, strings.ToUpper(k), len(kv)+1, MaxEnvStringBytes)
		}
		env = append(env, kv)
	}
	return env, nil
}
