package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/reap"
	"github.com/recon-mri/recon/internal/runner"
	"github.com/recon-mri/recon/internal/servertest"
)

// hostileOptions are option values a client might send to break out of the
// script's calling convention.
var hostileOptions = map[string]string{
	"cmd":        "$(touch x)",
	"backtick":   "`touch x`",
	"semi":       "; rm -rf / ; touch x",
	"flag":       "--output-dir=/etc",
	"newlines":   "line1\nline2\n\nRECON_OPT_INJECTED=1\n",
	"quotes":     `'"\'"\"; touch x; echo "`,
	"unicode":    "Grüße, 磁気共鳴 🧲 \u202e",
	"empty":      "",
	"Mixed_Case": "value with spaces  and\ttab",
	"glob":       "* ../../* /etc/*",
	"notutf8":    "\xff\xfe\x80",
	"max":        strings.Repeat("z", runner.MaxOptionValueBytes),
}

func TestRunArgvEnvOptions(t *testing.T) {
	t.Setenv("RECON_TEST_SECRET", "hunter2")
	t.Setenv("SHARED_KEY", "do-not-leak")
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("TZ", "Europe/Berlin")
	t.Setenv("PATH", "/usr/bin:/bin")

	script := writeScript(t, `
out=$3
printf '%s\0' "$0" "$@" > "$out/argv"
cat /proc/$$/environ > "$out/env"
pwd > "$out/cwd"
readlink /proc/$$/fd/0 > "$out/stdin"
`)
	in, out := jobDirs(t)
	res, err := runner.Run(context.Background(), runner.Spec{
		Script:    script,
		InputDir:  in,
		OutputDir: out,
		JobID:     "job-123",
		Instance:  "srv",
		Attempt:   3,
		Options:   hostileOptions,
		Env:       []string{"RECON_BIN=/opt/recon/bin/recon", "RECON_DICOM_UID_ROOT=2.25"},
		Timeout:   time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success() {
		t.Fatalf("Run = %+v, want success", res)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("output dir: %v, mode %v; want created with 0700", err, fi.Mode())
	}

	argv := readNulList(t, filepath.Join(out, "argv"))
	if diff := cmp.Diff([]string{script, in, "--output-dir", out}, argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if got := readTrim(t, filepath.Join(out, "cwd")); got != in {
		t.Errorf("working directory = %q, want the input dir %q", got, in)
	}
	if got := readTrim(t, filepath.Join(out, "stdin")); got != "/dev/null" {
		t.Errorf("stdin = %q, want /dev/null", got)
	}

	env := map[string]string{}
	for _, kv := range readNulList(t, filepath.Join(out, "env")) {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; dup {
			t.Errorf("variable %s set twice", k)
		}
		env[k] = v
	}
	want := map[string]string{
		"PATH":                 "/usr/bin:/bin",
		"LANG":                 "C.UTF-8",
		"TZ":                   "Europe/Berlin",
		"RECON_JOB_ID":         "job-123",
		"RECON_INPUT_DIR":      in,
		"RECON_OUTPUT_DIR":     out,
		"RECON_ATTEMPT":        "srv.job-123.3",
		"RECON_BIN":            "/opt/recon/bin/recon",
		"RECON_DICOM_UID_ROOT": "2.25",
	}
	for _, k := range []string{"HOME", "USER", "LOGNAME", "LC_ALL", "LC_CTYPE", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			want[k] = v
		}
	}
	for k, v := range hostileOptions {
		want["RECON_OPT_"+strings.ToUpper(k)] = v
	}
	var opts map[string]string
	if err := json.Unmarshal([]byte(env["RECON_OPTIONS_JSON"]), &opts); err != nil {
		t.Errorf("RECON_OPTIONS_JSON: %v", err)
	}
	wantJSON := map[string]string{}
	for k, v := range hostileOptions {
		wantJSON[k] = jsonString(v)
	}
	if diff := cmp.Diff(wantJSON, opts); diff != "" {
		t.Errorf("RECON_OPTIONS_JSON (-want +got):\n%s", diff)
	}
	delete(env, "RECON_OPTIONS_JSON")
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("environment (-want +got):\n%s", diff)
	}

	for _, dir := range []string{in, out, filepath.Dir(in), filepath.Dir(script)} {
		if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
			t.Errorf("an option value was executed: %s/x exists", dir)
		}
	}
}

// jsonString is s as encoding/json carries it: each byte of an invalid
// UTF-8 sequence becomes U+FFFD.
func jsonString(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		b.WriteRune(r) // utf8.RuneError is U+FFFD
		s = s[n:]
	}
	return b.String()
}

func readNulList(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestRunDefaultPATHAndWorkDir(t *testing.T) {
	t.Setenv("PATH", "")
	script := writeScript(t, `echo "$PATH" > "$RECON_OUTPUT_DIR/path"; pwd > "$RECON_OUTPUT_DIR/cwd"`)
	in, out := jobDirs(t)
	work := t.TempDir()
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, Dir: work})
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got := readTrim(t, filepath.Join(out, "path")); got != runner.DefaultPATH {
		t.Errorf("PATH = %q, want %q", got, runner.DefaultPATH)
	}
	if got := readTrim(t, filepath.Join(out, "cwd")); got != work {
		t.Errorf("working directory = %q, want %q", got, work)
	}
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		code    int
		signal  string
		success bool
	}{
		{"zero", "exit 0", 0, "", true},
		{"three", "echo failing >&2; exit 3", 3, "", false},
		{"killed", "kill -KILL $$", -1, "killed", false},
		{"terminated", "kill -TERM $$", -1, "terminated", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in, out := jobDirs(t)
			res, err := runner.Run(context.Background(), runner.Spec{
				Script: writeScript(t, tc.body), InputDir: in, OutputDir: out, JobID: "j",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tc.code || res.Signal != tc.signal || res.Success() != tc.success || res.TimedOut || res.Cancelled {
				t.Errorf("Run = %+v, want exit code %d, signal %q, success %v", res, tc.code, tc.signal, tc.success)
			}
		})
	}
}

func TestRunStartErrors(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	ok := writeScript(t, "exit 0")
	notExec := filepath.Join(t.TempDir(), "plain.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/bash\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fileAsParent := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(fileAsParent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec runner.Spec
		want string
	}{
		{"relative script", runner.Spec{Script: "script.sh", InputDir: in, OutputDir: out}, "not absolute"},
		{"missing script", runner.Spec{Script: "/nonexistent/script.sh", InputDir: in, OutputDir: out}, "start script"},
		{"not executable", runner.Spec{Script: notExec, InputDir: in, OutputDir: out}, "permission denied"},
		{"no input", runner.Spec{Script: ok, OutputDir: out}, "no input dir"},
		{"no output", runner.Spec{Script: ok, InputDir: in}, "no output dir"},
		{"output not creatable", runner.Spec{Script: ok, InputDir: in, OutputDir: filepath.Join(fileAsParent, "out")}, "create output dir"},
		{"bad key", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{"a-b": "1"}}, `option key "a-b"`},
		{"empty key", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{"": "1"}}, "option key"},
		{"long key", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{strings.Repeat("k", 65): "1"}}, "option key"},
		{"case twins", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{"method": "a", "METHOD": "b"}}, "differ only in case"},
		{"NUL value", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{"k": "a\x00b"}}, "NUL"},
		{"long value", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: map[string]string{"k": strings.Repeat("v", runner.MaxOptionValueBytes+1)}}, "at most"},
		{"too many", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: manyOptions(runner.MaxOptions+1, 1)}, "too many options"},
		{"JSON too big", runner.Spec{Script: ok, InputDir: in, OutputDir: out, Options: manyOptions(runner.MaxOptions, runner.MaxOptionValueBytes)}, "RECON_OPTIONS_JSON"},
	}
	for _, tc := range tests {
		res, err := runner.Run(context.Background(), tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run = %+v, %v; want error containing %q", tc.name, res, err, tc.want)
		}
	}
}

func manyOptions(n, size int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", size)
	}
	return m
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `
sleep 1000 &
echo $! > "$RECON_OUTPUT_DIR/grandchild"
sleep 1000
`)
	start := time.Now()
	res, err := runner.Run(context.Background(), runner.Spec{
		Script: script, InputDir: in, OutputDir: out, Timeout: 2 * time.Second, KillGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.Cancelled || res.ExitCode != -1 || res.Signal != "terminated" {
		t.Errorf("Run = %+v, want timed out by SIGTERM", res)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run took %v after a 2s timeout", d)
	}
	waitGone(t, readPID(t, filepath.Join(out, "grandchild")))
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `
sleep 1000 &
echo $! > "$RECON_OUTPUT_DIR/grandchild"
echo ready > "$RECON_OUTPUT_DIR/ready"
sleep 1000
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ret struct {
		res runner.Result
		err error
	}
	done := make(chan ret, 1)
	go func() {
		res, err := runner.Run(ctx, runner.Spec{Script: script, InputDir: in, OutputDir: out, Timeout: time.Hour, KillGrace: 5 * time.Second})
		done <- ret{res, err}
	}()
	waitForFile(t, 20*time.Second, filepath.Join(out, "ready"))
	cancel()
	var r ret
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.res.Cancelled || r.res.TimedOut || r.res.ExitCode != -1 || r.res.Signal != "terminated" {
		t.Errorf("Run = %+v, want cancelled by SIGTERM", r.res)
	}
	waitGone(t, readPID(t, filepath.Join(out, "grandchild")))
}

func TestRunCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := runner.Run(ctx, runner.Spec{Script: writeScript(t, "touch \"$RECON_OUTPUT_DIR/ran\""), InputDir: in, OutputDir: out})
	if err == nil || !res.Cancelled {
		t.Errorf("Run = %+v, %v; want an error and Cancelled", res, err)
	}
	if _, err := os.Stat(filepath.Join(out, "ran")); err == nil {
		t.Error("the script ran although ctx was done")
	}
}

func TestRunKillGraceEscalates(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `
trap '' TERM
sleep 1000 &
echo $! > "$RECON_OUTPUT_DIR/grandchild"
echo ready > "$RECON_OUTPUT_DIR/ready"
while :; do sleep 1000; done
`)
	const grace = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ret struct {
		res runner.Result
		err error
		at  time.Time
	}
	done := make(chan ret, 1)
	go func() {
		res, err := runner.Run(ctx, runner.Spec{Script: script, InputDir: in, OutputDir: out, KillGrace: grace})
		done <- ret{res, err, time.Now()}
	}()
	waitForFile(t, 20*time.Second, filepath.Join(out, "ready"))
	cancelled := time.Now()
	cancel()
	var r ret
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return: SIGKILL never came")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.res.Cancelled || r.res.Signal != "killed" || r.res.ExitCode != -1 {
		t.Errorf("Run = %+v, want cancelled and SIGKILLed", r.res)
	}
	if d := r.at.Sub(cancelled); d < grace {
		t.Errorf("Run returned %v after cancel, before the %v grace", d, grace)
	}
	waitGone(t, readPID(t, filepath.Join(out, "grandchild")))
}

func TestRunKillsLeftoversAfterExit(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	// The grandchild keeps the stdout pipe open: without the group kill,
	// Run would wait for it (up to KillGrace, an hour here).
	script := writeScript(t, `
sleep 1000 &
echo $! > "$RECON_OUTPUT_DIR/grandchild"
(trap '' TERM HUP; exec sleep 1000 </dev/null >/dev/null 2>&1) &
echo $! > "$RECON_OUTPUT_DIR/daemon"
echo bye
exit 0
`)
	start := time.Now()
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, KillGrace: time.Hour})
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run took %v: it waited for the grandchild", d)
	}
	waitGone(t, readPID(t, filepath.Join(out, "grandchild")))
	waitGone(t, readPID(t, filepath.Join(out, "daemon")))
}

// TestRunKillsEscapedProcesses: processes that left the script's process
// group, one with setsid and one orphaned by a double fork, are killed
// when the script exits, each logged with its pid and command, and Run
// does not wait for them although they hold the output open.
func TestRunKillsEscapedProcesses(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `
setsid bash -c 'echo $$ > "$RECON_OUTPUT_DIR/setsid.tmp"; mv "$RECON_OUTPUT_DIR/setsid.tmp" "$RECON_OUTPUT_DIR/setsid"; exec sleep 1000' &
bash -c 'bash -c '"'"'echo $$ > "$RECON_OUTPUT_DIR/orphan.tmp"; mv "$RECON_OUTPUT_DIR/orphan.tmp" "$RECON_OUTPUT_DIR/orphan"; exec sleep 1001'"'"' &'
# Exit only once both have left the group and run sleep.
while [ ! -e "$RECON_OUTPUT_DIR/setsid" ] || [ ! -e "$RECON_OUTPUT_DIR/orphan" ]; do sleep 0.01; done
for f in setsid orphan; do
  while ! grep -q '^sleep' "/proc/$(cat "$RECON_OUTPUT_DIR/$f")/cmdline"; do sleep 0.01; done
done
exit 0
`)
	const grace = 15 * time.Second
	h := newCapture()
	start := time.Now()
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, JobID: "job-esc",
		KillGrace: grace, Logger: slog.New(h)})
	pids := map[int]string{
		readPID(t, filepath.Join(out, "setsid")): "sleep 1000",
		readPID(t, filepath.Join(out, "orphan")): "sleep 1001",
	}
	for pid := range pids {
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if d := time.Since(start); d >= grace {
		t.Errorf("Run took %v: it waited for the escaped processes to close the output", d)
	}
	for pid, cmd := range pids {
		// Run returns once they are dead, not merely signalled.
		if !processGone(pid) {
			t.Errorf("escaped process %d (%s) still runs after Run returned", pid, cmd)
		}
		logged := slices.ContainsFunc(h.records(), func(r record) bool {
			return r.Level == slog.LevelWarn && r.Msg == "killed a process the script left running" &&
				r.Attrs["pid"] == int64(pid) && r.Attrs["command"] == cmd && r.Attrs["job_id"] == "job-esc"
		})
		if !logged {
			t.Errorf("no warning naming pid %d and command %q; records: %+v", pid, cmd, h.records())
		}
	}
}

// TestRunKillsProcessThatDroppedMarker: a process that leaves the group
// (setsid) and drops the marker (env -i) is still in the run's cgroup,
// where the system has cgroups (root, cgroup2): it is killed and logged
// when the script exits.
func TestRunKillsProcessThatDroppedMarker(t *testing.T) {
	t.Parallel()
	if !cgroupsWork() {
		servertest.SkipUnlessStrict(t, "no writable cgroup2 hierarchy (needs root)")
	}
	in, out := jobDirs(t)
	script := writeScript(t, `
env -i setsid /bin/sh -c 'echo $$ > "$1/escaped.tmp"; mv "$1/escaped.tmp" "$1/escaped"; exec sleep 1002' sh "$RECON_OUTPUT_DIR" &
while [ ! -e "$RECON_OUTPUT_DIR/escaped" ]; do sleep 0.01; done
while ! grep -q '^sleep' "/proc/$(cat "$RECON_OUTPUT_DIR/escaped")/cmdline"; do sleep 0.01; done
exit 0
`)
	const grace = 15 * time.Second
	h := newCapture()
	start := time.Now()
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, KillGrace: grace, Logger: slog.New(h)})
	pid := readPID(t, filepath.Join(out, "escaped"))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if d := time.Since(start); d >= grace {
		t.Errorf("Run took %v: it waited for the escaped process to close the output", d)
	}
	if !processGone(pid) {
		t.Errorf("the process without the marker (%d) still runs after Run returned", pid)
	}
	if !slices.ContainsFunc(h.records(), func(r record) bool {
		return r.Level == slog.LevelWarn && r.Msg == "killed a process the script left running" &&
			r.Attrs["pid"] == int64(pid) && r.Attrs["command"] == "sleep 1002"
	}) {
		t.Errorf("no warning naming pid %d; records: %+v", pid, h.records())
	}
}

// TestRunEscapedProcessHoldingOutput: a process that left the group
// (setsid), the marker (env -i) and, where there is one, the run's cgroup
// (back into the test's own, as root may) cannot be found; KillGrace
// bounds how long Run waits for it to close stdout.
func TestRunEscapedProcessHoldingOutput(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	procs := ""
	if own, err := reap.OwnCgroup(); err == nil && cgroupsWork() {
		procs = filepath.Join(own, "cgroup.procs")
	}
	if err := os.WriteFile(filepath.Join(in, "cgroup"), []byte(procs), 0o600); err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, `
env -i setsid bash -c 'if [ -s "$2/cgroup" ]; then echo $$ > "$(cat "$2/cgroup")"; fi; echo $$ > "$1/escaped.tmp"; mv "$1/escaped.tmp" "$1/escaped"; exec sleep 1000' bash "$RECON_OUTPUT_DIR" "$1" &
# Exit only once the process has left the group.
while [ ! -e "$RECON_OUTPUT_DIR/escaped" ]; do sleep 0.01; done
exit 0
`)
	const grace = 300 * time.Millisecond
	h := newCapture()
	start := time.Now()
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, KillGrace: grace, Logger: slog.New(h)})
	pid := readPID(t, filepath.Join(out, "escaped"))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run took %v: the escaped process hung it", d)
	}
	warned := slices.ContainsFunc(h.records(), func(r record) bool {
		return r.Level == slog.LevelWarn && strings.Contains(r.Msg, "kept its output open")
	})
	if !warned {
		t.Error("no warning about the process that kept the output open")
	}
}

func TestRunLogsOutput(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `
echo "first line"
printf 'crlf line\r\n'
echo "to stderr 1" >&2
head -c 10000 /dev/zero | tr '\0' a
echo
printf '\xff invalid\n'
for i in $(seq 1 200); do echo "stderr line $i" >&2; done
printf 'no newline at end'
printf 'last stderr words' >&2
`)
	h := newCapture()
	res, err := runner.Run(context.Background(), runner.Spec{
		Script: script, InputDir: in, OutputDir: out, JobID: "job-log", Logger: slog.New(h),
	})
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	want := []string{"first line", "crlf line", strings.Repeat("a", runner.MaxLineBytes), "\uFFFD invalid", "no newline at end"}
	if diff := cmp.Diff(want, h.lines("stdout")); diff != "" {
		t.Errorf("stdout lines (-want +got):\n%s", diff)
	}
	stderr := h.lines("stderr")
	if len(stderr) != 202 || stderr[0] != "to stderr 1" || stderr[200] != "stderr line 200" || stderr[201] != "last stderr words" {
		t.Errorf("stderr lines: %d, first %q, last %q", len(stderr), stderr[0], stderr[len(stderr)-1])
	}
	for _, r := range h.records() {
		if r.Attrs["job_id"] != "job-log" {
			t.Errorf("record %q has job_id %v", r.Msg, r.Attrs["job_id"])
		}
		if r.Msg == "script output" && r.Attrs["line"] == want[2] && r.Attrs["truncated"] != true {
			t.Errorf("the long line is not marked truncated: %v", r.Attrs)
		}
	}
	if len(res.StderrTail) > runner.StderrTailBytes || !strings.HasSuffix(res.StderrTail, "stderr line 200\nlast stderr words") {
		t.Errorf("StderrTail = %q", res.StderrTail)
	}
	if !strings.HasPrefix(res.StderrTail, "stderr line ") {
		t.Errorf("StderrTail does not start at a line: %q", res.StderrTail[:40])
	}
	if res.StdoutBytes != int64(len("first line\ncrlf line\r\n")+10001+len("\xff invalid\n")+len("no newline at end")) {
		t.Errorf("StdoutBytes = %d", res.StdoutBytes)
	}
}

// TestRunOutputFlood runs alone (not parallel) so that its allocation
// figures are its own.
func TestRunOutputFlood(t *testing.T) {
	in, out := jobDirs(t)
	const total = 200_000_000
	script := writeScript(t, `
yes 'flooding stderr with a line of text' | head -c 200000000 >&2
echo 'final words' >&2
echo 'stdout still works'
`)
	const maxLog = 64 << 10
	h := newCapture()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := runner.Run(context.Background(), runner.Spec{
		Script: script, InputDir: in, OutputDir: out, Logger: slog.New(h), MaxLogBytes: maxLog, Timeout: 5 * time.Minute,
	})
	runtime.ReadMemStats(&after)
	if err != nil || !res.Success() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if want := int64(total + len("final words\n")); res.StderrBytes != want {
		t.Errorf("StderrBytes = %d, want %d", res.StderrBytes, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("Run allocated %d bytes for %d bytes of output", alloc, total)
	}
	logged := 0
	for _, l := range h.lines("stderr") {
		logged += len(l)
	}
	if logged > maxLog || logged < maxLog/2 {
		t.Errorf("logged %d bytes of stderr, cap %d", logged, maxLog)
	}
	if got := h.lines("stdout"); !slices.Equal(got, []string{"stdout still works"}) {
		t.Errorf("stdout lines = %q", got)
	}
	var capped, summary bool
	for _, r := range h.records() {
		switch r.Msg {
		case "script output limit reached; further output is discarded":
			capped = r.Attrs["stream"] == "stderr"
		case "script output discarded":
			summary = r.Attrs["stream"] == "stderr" && r.Attrs["discarded_bytes"].(int64) >= total-2*maxLog
		}
	}
	if !capped || !summary {
		t.Errorf("limit record %v, summary record %v; want both", capped, summary)
	}
	if !strings.HasSuffix(res.StderrTail, "flooding stderr with a line of text\nflooding stderr withfinal words") || len(res.StderrTail) > runner.StderrTailBytes {
		t.Errorf("StderrTail = …%q (%d bytes)", res.StderrTail[max(0, len(res.StderrTail)-80):], len(res.StderrTail))
	}
	if bytes.Contains([]byte(res.StderrTail), []byte{0}) {
		t.Error("StderrTail contains NUL")
	}
}

// TestRunRefusesExtraEnv: Spec.Env adds RECON_ variables, never one that
// Run sets itself (the job's id, directories, marker or options) nor
// anything else.
func TestRunRefusesExtraEnv(t *testing.T) {
	script := writeScript(t, "exit 0")
	for _, kv := range []string{"PATH=/tmp", "RECON_JOB_ID=x", "RECON_ATTEMPT=x", "RECON_OPT_METHOD=x", "RECON_OPTIONS_JSON={}", "RECON_BIN", "RECON_X=a\x00b", "LD_PRELOAD=/x.so"} {
		in, out := jobDirs(t)
		_, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, JobID: "j", Env: []string{kv}})
		if err == nil || !strings.Contains(err.Error(), "extra environment variable") {
			t.Errorf("Env %q: error %v, want a refusal", kv, err)
		}
	}
}
