package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/runner"
	"github.com/recon-mri/recon/internal/servertest"
)

// dumpScript records its argv, environment and working directory listing
// in the output dir and copies the inputs to inputs/ there.
const dumpScript = `#!/bin/sh
set -eu
out="$3"
printf '%s' "$#" > "$out/argc"
i=0
for a in "$@"; do i=$((i+1)); printf '%s' "$a" > "$out/argv$i"; done
env -0 > "$out/env0"
ls -A > "$out/cwd-listing"
mkdir "$out/inputs"
for f in "$1"/*; do cp "$f" "$out/inputs/"; done
`

// TestSubmitOptionsAndResults runs a multi-file job with hostile options
// and checks what the script saw, the results and the cleanup after
// delivery.
func TestSubmitOptionsAndResults(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: dumpScript})
	c := s.Dial(t)

	sentinel := filepath.Join(t.TempDir(), "pwned")
	opts := map[string]string{
		"method":     "pics",
		"Subst":      "$(touch x)",
		"Backtick":   "`touch x`",
		"Semicolon":  "; rm -rf /",
		"ABS":        "$(touch " + sentinel + "); touch " + sentinel,
		"flag":       "--output-dir=/etc",
		"newline":    "line1\nline2\n",
		"quotes":     `it's "quoted" \'`,
		"dollar":     "$HOME ${PATH} $0 $1",
		"glob":       "* ?",
		"unicode":    "Grüße, 你好 ☢",
		"spaces":     "  leading and trailing  ",
		"empty":      "",
		"long_value": strings.Repeat("v", protocol.MaxOptionValue),
		"UPPER_9":    "=value=with=equals=",
	}

	in := t.TempDir()
	inputs := map[string][]byte{
		"P00000.7":   randomBytes(t, 300<<10+17), // more than one copy buffer and many records
		"scan 2.dat": []byte("second file\n"),
		"empty.raw":  {},
		"Grüße.h5":   randomBytes(t, 1000),
	}
	var paths []string
	for name, data := range inputs {
		paths = append(paths, writeInput(t, in, name, data))
	}
	slices.Sort(paths)

	job, err := c.Submit(ctx, paths, &client.SubmitOptions{Options: opts})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if job.State != "queued" || !jobs.ValidID(job.JobID) {
		t.Fatalf("Submit returned job %q in state %q, want a valid id, queued", job.JobID, job.State)
	}
	// The client's session checked the files with BLAKE3 (its default):
	// the job's view gives their BLAKE3, and no SHA-256.
	for _, f := range job.Files {
		if want := blake3Hex(inputs[f.Name]); f.BLAKE3 != want || f.SHA256 != "" || f.Size != int64(len(inputs[f.Name])) {
			t.Errorf("server recorded input %q as %d bytes %+v, want %d bytes, BLAKE3 %s", f.Name, f.Size, f, len(inputs[f.Name]), want)
		}
	}
	if len(job.Files) != len(inputs) {
		t.Errorf("job has %d files, want %d", len(job.Files), len(inputs))
	}

	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "succeeded" {
		t.Fatalf("job ended %s (%s), want succeeded", done.State, done.Error)
	}
	if done.ExitCode == nil || *done.ExitCode != 0 {
		t.Errorf("exit code %v, want 0", done.ExitCode)
	}
	inputDir := filepath.Join(s.Config.InputBaseDir, job.JobID)
	outputDir := filepath.Join(s.Config.OutputBaseDir, job.JobID)
	waitGone(t, inputDir, "the input dir of the ended job")
	if !exists(outputDir) {
		t.Fatalf("output dir missing before the results were fetched")
	}

	dst := filepath.Join(t.TempDir(), "results")
	fj, files, err := c.Fetch(ctx, job.JobID, dst, nil)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if fj.JobID != job.JobID {
		t.Errorf("Fetch returned job %q, want %q", fj.JobID, job.JobID)
	}
	got := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatalf("read result %s: %v", f.Name, err)
		}
		if sha256Hex(b) != f.SHA256 || int64(len(b)) != f.Size {
			t.Errorf("result %s: %d bytes with SHA-256 %s on disk, manifest says %d bytes %s", f.Name, len(b), sha256Hex(b), f.Size, f.SHA256)
		}
		if want := filepath.Join(dst, filepath.FromSlash(f.Name)); f.Path != want {
			t.Errorf("result %s written to %s, want %s", f.Name, f.Path, want)
		}
		got[f.Name] = b
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	wantNames := []string{"argc", "argv1", "argv2", "argv3", "cwd-listing", "env0"}
	for n := range inputs {
		wantNames = append(wantNames, "inputs/"+n)
	}
	slices.Sort(wantNames)
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Fatalf("result names (-want +got):\n%s", diff)
	}
	for n, data := range inputs {
		if !bytes.Equal(got["inputs/"+n], data) {
			t.Errorf("result inputs/%s differs from the input sent", n)
		}
	}

	// argv is exactly INPUT_DIR --output-dir OUTPUT_DIR.
	if a := string(got["argc"]); a != "3" {
		t.Errorf("script got %s arguments, want 3", a)
	}
	// The script writes into its attempt's own directory, which becomes
	// the job's output once the attempt's processes are all gone.
	attemptDir := filepath.Join(s.Config.OutputBaseDir, ".attempt-"+job.JobID+"-1")
	if diff := cmp.Diff([]string{inputDir, "--output-dir", attemptDir},
		[]string{string(got["argv1"]), string(got["argv2"]), string(got["argv3"])}); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}

	// Options arrive verbatim, as RECON_OPT_<KEY> and in RECON_OPTIONS_JSON.
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(got["env0"]), "\x00"), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad environment entry %q", kv)
		}
		env[k] = v
	}
	for k, v := range opts {
		name := "RECON_OPT_" + strings.ToUpper(k)
		if gv, ok := env[name]; !ok || gv != v {
			t.Errorf("%s = %q (set: %v), want %q", name, gv, ok, v)
		}
	}
	var jsonOpts map[string]string
	if err := json.Unmarshal([]byte(env["RECON_OPTIONS_JSON"]), &jsonOpts); err != nil {
		t.Errorf("RECON_OPTIONS_JSON %q: %v", env["RECON_OPTIONS_JSON"], err)
	} else if diff := cmp.Diff(opts, jsonOpts); diff != "" {
		t.Errorf("RECON_OPTIONS_JSON (-want +got):\n%s", diff)
	}
	if env["RECON_JOB_ID"] != job.JobID {
		t.Errorf("RECON_JOB_ID = %q, want %q", env["RECON_JOB_ID"], job.JobID)
	}
	// Nothing of the server's environment passes but the allow-list.
	allowed := map[string]bool{"PWD": true} // exported by the shell itself
	for _, n := range runner.EnvAllowList {
		allowed[n] = true
	}
	for k := range env {
		if strings.HasPrefix(k, "RECON_OPT_") {
			if !optKeyKnown(opts, k) {
				t.Errorf("script got unexpected option variable %s", k)
			}
			continue
		}
		if !allowed[k] && !strings.HasPrefix(k, "RECON_") {
			t.Errorf("script got environment variable %s from outside the allow-list", k)
		}
	}

	// No option was ever run as shell text.
	if exists(sentinel) {
		t.Errorf("an option value was run by a shell: %s exists", sentinel)
	}
	for _, l := range strings.Split(string(got["cwd-listing"]), "\n") {
		if l == "x" {
			t.Errorf("an option value was run by a shell: x in the script's working directory")
		}
	}
	for _, root := range []string{s.Dir, dst} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "x" {
				t.Errorf("an option value was run by a shell: %s exists", p)
			}
			return nil
		})
	}

	// Delivered: the output dir is gone, the job says so.
	if exists(outputDir) {
		t.Errorf("output dir still exists after the client acknowledged the results")
	}
	if exists(inputDir) {
		t.Errorf("input dir still exists after delivery")
	}
	after, err := c.Job(ctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if !after.Delivered || !after.ResultsGone || after.State != "succeeded" {
		t.Errorf("after fetch: state %s delivered %v results gone %v, want succeeded, true, true", after.State, after.Delivered, after.ResultsGone)
	}
	if diff := cmp.Diff(opts, after.Options); diff != "" {
		t.Errorf("job options (-want +got):\n%s", diff)
	}
}

func optKeyKnown(opts map[string]string, envName string) bool {
	for k := range opts {
		if "RECON_OPT_"+strings.ToUpper(k) == envName {
			return true
		}
	}
	return false
}

// TestOnlyRegularResults checks that links, pipes and hard links in the
// output dir are not returned, and names a client could not write either.
func TestOnlyRegularResults(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
set -eu
out="$3"
echo "the image" > "$out/normal.dcm"
ln -s /etc/passwd "$out/passwd"
ln -s normal.dcm "$out/inner-link"
ln -s / "$out/root-link"
mkdir "$out/sub"
ln -s .. "$out/sub/up"
mkfifo "$out/fifo"
echo "a" > "$out/hard1"
ln "$out/hard1" "$out/hard2"
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "succeeded" {
		t.Fatalf("job ended %s (%s), want succeeded", done.State, done.Error)
	}
	if len(done.Results) != 1 || done.Results[0].Name != "normal.dcm" {
		t.Fatalf("results %+v, want only normal.dcm", done.Results)
	}
	// Each file left out is named in a warning of the job's log.
	skipped := map[string]string{}
	for _, r := range jobLogRecords(t, s.LogPath, job.JobID, "result not returned") {
		name, _ := r["file"].(string)
		reason, _ := r["reason"].(string)
		if r["level"] != "WARN" || reason == "" {
			t.Errorf("log record %v: want level WARN and a reason", r)
		}
		skipped[name] = reason
	}
	t.Logf("skipped with a warning: %v", skipped)
	for _, name := range []string{"passwd", "inner-link", "root-link", "sub/up", "fifo", "hard1", "hard2"} {
		if _, ok := skipped[name]; !ok {
			t.Errorf("no \"result not returned\" record for %s in the job's log (found %v)", name, skipped)
		}
	}
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, job.JobID, dst, nil)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(files) != 1 || files[0].Name != "normal.dcm" {
		t.Fatalf("fetched %+v, want only normal.dcm", files)
	}
	b, err := os.ReadFile(filepath.Join(dst, "normal.dcm"))
	if err != nil || string(b) != "the image\n" {
		t.Errorf("normal.dcm = %q, %v", b, err)
	}
	if diff := cmp.Diff([]string{"normal.dcm"}, dirNames(t, dst)); diff != "" {
		t.Errorf("fetch dir (-want +got):\n%s", diff)
	}
	if exists(filepath.Join(s.Config.OutputBaseDir, job.JobID)) {
		t.Errorf("output dir still exists after delivery")
	}
}

// TestUnportableResultNames checks that result files whose names the
// client would refuse (reserved device names, ':', a trailing dot) are left
// out, so the other results can still be fetched.
func TestUnportableResultNames(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
set -eu
out="$3"
echo good > "$out/good.dcm"
echo bad > "$out/CON.dcm"
echo bad > "$out/a:b.dcm"
echo bad > "$out/trailing."
mkdir "$out/NUL"
echo bad > "$out/NUL/inside.dcm"
echo first > "$out/Same.dcm"
echo second > "$out/same.dcm"
echo nfc > "$out/$(printf 'caf\303\251.dcm')"
echo nfd > "$out/$(printf 'cafe\314\201.dcm')"
echo file > "$out/Series"
mkdir "$out/series"
echo under > "$out/series/x.dcm"
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "succeeded" {
		t.Fatalf("job ended %s (%s), want succeeded", done.State, done.Error)
	}
	_, files, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Name)
	}
	// In name order the first of each clashing set stays: "Same.dcm"
	// before "same.dcm", the decomposed "café" before the precomposed one,
	// the file "Series" before the folder "series".
	want := []string{"Same.dcm", "Series", "cafe\u0301.dcm", "good.dcm"}
	if !slices.Equal(got, want) {
		t.Fatalf("fetched %q, want %q", got, want)
	}
}

// TestIdempotentSubmission checks that a retried submission gets the same
// job, without its files being sent again.
func TestIdempotentSubmission(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	c := s.Dial(t)
	p := writeInput(t, t.TempDir(), "P1.7", []byte("raw data"))
	sub := &client.SubmitOptions{SubmissionID: "scanner-42:exam.7", Options: map[string]string{"a": "1"}}
	first, err := c.Submit(ctx, []string{p}, sub)
	if err != nil {
		t.Fatalf("first Submit: %v", err)
	}
	second, err := c.Submit(ctx, []string{p}, sub)
	if err != nil {
		t.Fatalf("second Submit: %v", err)
	}
	if first.JobID != second.JobID {
		t.Fatalf("second submission got job %s, want %s", second.JobID, first.JobID)
	}

	// On the wire: the server answers the announcement with the existing
	// job and expects no bytes.
	rc := rawClient(t, ctx, s)
	m, err := request(rc, protocol.TypeSubmit, protocol.Submit{
		SubmissionID: "scanner-42:exam.7",
		Files:        []protocol.FileInfo{{Name: "P1.7", Size: 8}},
		Options:      map[string]string{"a": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ready protocol.SubmitReady
	if err := m.Decode(protocol.TypeSubmitReady, &ready); err != nil {
		t.Fatal(err)
	}
	if !ready.Existing || ready.Job == nil || ready.Job.JobID != first.JobID {
		t.Fatalf("submit_ready %+v, want existing job %s", ready, first.JobID)
	}
	// The session goes on without any file bytes.
	if _, err := rawStatus(rc); err != nil {
		t.Fatalf("status after an existing submission: %v", err)
	}

	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 {
		t.Errorf("queue holds %d jobs, want 1", len(q))
	}
	if j := waitDone(t, ctx, c, first.JobID); j.State != "succeeded" || j.SubmissionID != "scanner-42:exam.7" {
		t.Errorf("job ended %s with submission id %q", j.State, j.SubmissionID)
	}
}

// TestSubmissionIDConflict: a known submission id announced with other
// options or other files is refused as a conflict, naming the job it
// belongs to, instead of answered with that job.
func TestSubmissionIDConflict(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	c := s.Dial(t)
	dir := t.TempDir()
	p := writeInput(t, dir, "P1.7", []byte("raw data"))
	const sid = "scanner-7:exam.1"
	first, err := c.Submit(ctx, []string{p}, &client.SubmitOptions{SubmissionID: sid, Options: map[string]string{"a": "1"}})
	if err != nil {
		t.Fatalf("first Submit: %v", err)
	}
	other := writeInput(t, t.TempDir(), "P1.7", []byte("raw data, longer"))
	renamed := writeInput(t, dir, "P2.7", []byte("raw data"))
	for _, tc := range []struct {
		name    string
		path    string
		options map[string]string
	}{
		{"other options", p, map[string]string{"a": "2"}},
		{"no options", p, nil},
		{"another size", other, map[string]string{"a": "1"}},
		{"another name", renamed, map[string]string{"a": "1"}},
	} {
		c := s.Dial(t)
		_, err := c.Submit(ctx, []string{tc.path}, &client.SubmitOptions{SubmissionID: sid, Options: tc.options, Reconnects: -1})
		if !client.IsCode(err, protocol.CodeConflict) || !strings.Contains(err.Error(), first.JobID) {
			t.Errorf("%s under submission id %s: err %v, want a conflict naming job %s", tc.name, sid, err, first.JobID)
		}
	}
	again, err := s.Dial(t).Submit(ctx, []string{p}, &client.SubmitOptions{SubmissionID: sid, Options: map[string]string{"a": "1"}})
	if err != nil || again.JobID != first.JobID {
		t.Errorf("the same submission again: job %v, err %v; want job %s", again, err, first.JobID)
	}
}

// TestRestartRequeues stops a server with a running and queued jobs and
// starts a new one on the same directory: every job completes, the one
// that was running runs again.
func TestRestartRequeues(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	dir := t.TempDir()
	opts := servertest.Options{
		Dir:    dir,
		Script: releaseScript(sig),
		Extra:  map[string]string{"MAX_CONCURRENT_JOBS": "1"},
	}
	s1 := servertest.Start(t, opts)
	c1 := s1.Dial(t)
	inputs := [][]byte{[]byte("first"), []byte("second"), []byte("third")}
	var ids []string
	for i, data := range inputs {
		ids = append(ids, submitOne(t, ctx, c1, fmt.Sprintf("P%d.7", i), data).JobID)
	}
	waitJob(t, ctx, c1, ids[0], "running", func(j *client.Job) bool { return j.State == "running" })
	servertest.Eventually(t, pollTimeout, "first job's script starts", func() bool {
		return exists(filepath.Join(sig, "runs-"+ids[0]))
	})
	c1.Close()
	s1.Stop(t)

	s2 := servertest.Start(t, opts)
	c2 := s2.Dial(t)
	for i, id := range ids {
		j, err := c2.Job(ctx, id)
		if err != nil {
			t.Fatalf("job %d after restart: %v", i, err)
		}
		if j.Terminal() {
			t.Fatalf("job %d is %s after restart before release", i, j.State)
		}
	}
	release(t, sig, "all")
	for i, id := range ids {
		j := waitDone(t, ctx, c2, id)
		if j.State != "succeeded" {
			t.Fatalf("job %d ended %s (%s)", i, j.State, j.Error)
		}
		// The first job ran twice, but the run the clean shutdown
		// stopped does not count toward MAX_JOB_ATTEMPTS.
		if j.Attempts != 1 {
			t.Errorf("job %d: %d attempts counted, want 1", i, j.Attempts)
		}
		dst := t.TempDir()
		_, files, err := c2.Fetch(ctx, id, dst, nil)
		if err != nil {
			t.Fatalf("Fetch job %d: %v", i, err)
		}
		if len(files) != 1 {
			t.Fatalf("job %d: %d results, want 1", i, len(files))
		}
		b, err := os.ReadFile(files[0].Path)
		if err != nil || !bytes.Equal(b, inputs[i]) {
			t.Errorf("job %d result %q, %v; want %q", i, b, err, inputs[i])
		}
	}
	b, err := os.ReadFile(filepath.Join(sig, "runs-"+ids[0]))
	if err != nil || strings.Count(string(b), "run") != 2 {
		t.Errorf("first job's script ran %q times, want twice", b)
	}
}

// TestEventsInOrder follows a queued job with Wait: queued at position 2,
// then 1, then running, then succeeded, and jobs run in FIFO order.
func TestEventsInOrder(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: releaseScript(sig),
		Extra:  map[string]string{"MAX_CONCURRENT_JOBS": "1"},
	})
	c := s.Dial(t)
	a := submitOne(t, ctx, c, "A.7", []byte("a")).JobID
	b := submitOne(t, ctx, c, "B.7", []byte("b")).JobID
	cc := submitOne(t, ctx, c, "C.7", []byte("c")).JobID
	waitJob(t, ctx, c, a, "running", func(j *client.Job) bool { return j.State == "running" })

	type ev struct {
		State    client.JobState
		Position int
	}
	events := make(chan ev, 16)
	waitErr := make(chan error, 1)
	w := s.Dial(t)
	go func() {
		_, err := w.Wait(ctx, cc, func(j client.Job) { events <- ev{j.State, j.Position} })
		close(events)
		waitErr <- err
	}()
	next := func(want ev) {
		t.Helper()
		select {
		case got, ok := <-events:
			if !ok {
				t.Fatalf("Wait ended (%v) before event %+v", <-waitErr, want)
			}
			if got != want {
				t.Fatalf("event %+v, want %+v", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no event %+v: %v", want, ctx.Err())
		}
	}
	next(ev{"queued", 2})
	release(t, sig, a)
	next(ev{"queued", 1})
	if j := waitJob(t, ctx, c, b, "running", func(j *client.Job) bool { return j.State == "running" }); j.Attempts != 1 {
		t.Errorf("B attempts %d", j.Attempts)
	}
	release(t, sig, b)
	next(ev{"running", 0})
	release(t, sig, cc)
	next(ev{"succeeded", 0})
	if _, ok := <-events; ok {
		t.Errorf("event after the terminal one")
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("Wait: %v", err)
	}

	var starts []time.Time
	for _, id := range []string{a, b, cc} {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != "succeeded" || j.StartedAt == nil {
			t.Fatalf("job %s: %s, started %v", id, j.State, j.StartedAt)
		}
		starts = append(starts, *j.StartedAt)
	}
	if !slices.IsSortedFunc(starts, func(x, y time.Time) int { return x.Compare(y) }) {
		t.Errorf("jobs did not start in submission order: %v", starts)
	}
}

// TestResultsExpire checks that results nobody fetches are removed after
// RESULT_RETENTION_HOURS (its smallest value, 0.001 h = 3.6 s).
func TestResultsExpire(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"RESULT_RETENTION_HOURS": "0.001"}})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "succeeded" || len(done.Results) != 1 {
		t.Fatalf("job ended %s with %d results", done.State, len(done.Results))
	}
	out := filepath.Join(s.Config.OutputBaseDir, job.JobID)
	if !exists(out) {
		t.Fatal("output dir missing right after the job ended")
	}
	j := waitJob(t, ctx, c, job.JobID, "results expire", func(j *client.Job) bool { return j.ResultsGone })
	if j.Delivered {
		t.Errorf("expired results marked delivered")
	}
	if exists(out) {
		t.Errorf("output dir still exists after the results expired")
	}
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("Fetch of expired results: %v, want code gone", err)
	}
}

// TestFetchErrors checks fetch of an unknown job, of a queued job, and a
// second fetch.
func TestFetchErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: releaseScript(sig),
		Extra:  map[string]string{"MAX_CONCURRENT_JOBS": "1"},
	})
	c := s.Dial(t)
	for _, id := range []string{jobs.NewID(), "not-a-job-id", "../../etc/passwd", ""} {
		if _, _, err := c.Fetch(ctx, id, t.TempDir(), nil); !client.IsCode(err, client.CodeNotFound) {
			t.Errorf("Fetch(%q): %v, want code not_found", id, err)
		}
		if _, err := c.Job(ctx, id); !client.IsCode(err, client.CodeNotFound) {
			t.Errorf("Job(%q): %v, want code not_found", id, err)
		}
		if _, err := c.Wait(ctx, id, nil); !client.IsCode(err, client.CodeNotFound) {
			t.Errorf("Wait(%q): %v, want code not_found", id, err)
		}
	}
	running := submitOne(t, ctx, c, "A.7", []byte("a")).JobID
	queued := submitOne(t, ctx, c, "B.7", []byte("b")).JobID
	waitJob(t, ctx, c, running, "running", func(j *client.Job) bool { return j.State == "running" })
	for _, id := range []string{running, queued} {
		dst := filepath.Join(t.TempDir(), "out")
		if _, _, err := c.Fetch(ctx, id, dst, nil); !client.IsCode(err, client.CodeNotFinished) {
			t.Errorf("Fetch of an unfinished job: %v, want code not_finished", err)
		}
		if exists(dst) {
			t.Errorf("Fetch of an unfinished job created %s", dst)
		}
	}
	release(t, sig, "all")
	if j := waitDone(t, ctx, c, queued); j.State != "succeeded" {
		t.Fatalf("job ended %s", j.State)
	}
	if _, files, err := c.Fetch(ctx, queued, t.TempDir(), nil); err != nil || len(files) != 1 {
		t.Fatalf("first Fetch: %d files, %v", len(files), err)
	}
	if _, _, err := c.Fetch(ctx, queued, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("second Fetch: %v, want code gone", err)
	}
	// The errors left the session usable.
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("Status after the fetch errors: %v", err)
	}
}

// TestCleanRestartsKeepAttempts restarts the server cleanly three times
// while a job runs, with MAX_JOB_ATTEMPTS = 1: a stop the operator asked
// for is not the job's fault, so the job runs again each time and then
// succeeds.
func TestCleanRestartsKeepAttempts(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	opts := servertest.Options{
		Dir:    t.TempDir(),
		Script: releaseScript(sig),
		Extra:  map[string]string{"MAX_JOB_ATTEMPTS": "1"},
	}
	s := servertest.Start(t, opts)
	id := submitOne(t, ctx, s.Dial(t), "P1.7", []byte("raw")).JobID
	runs := func() int {
		b, _ := os.ReadFile(filepath.Join(sig, "runs-"+id))
		return strings.Count(string(b), "run")
	}
	for i := 1; i <= 3; i++ {
		servertest.Eventually(t, pollTimeout, fmt.Sprintf("run %d starts", i), func() bool { return runs() == i })
		s.Stop(t)
		s = servertest.Start(t, opts)
	}
	servertest.Eventually(t, pollTimeout, "run 4 starts", func() bool { return runs() == 4 })
	release(t, sig, "all")
	j := waitDone(t, ctx, s.Dial(t), id)
	if j.State != "succeeded" || j.Attempts != 1 {
		t.Fatalf("job after three clean restarts: %s, %d attempts (%s); want succeeded, 1", j.State, j.Attempts, j.Error)
	}
}
