//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package watch

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestGrowingFile writes a file in many steps: it is submitted once, only
// after it stopped growing, and complete.
func TestGrowingFile(t *testing.T) {
	e := newEnv(t)
	srv := e.startServer(servertest.Options{})
	e.mod = func(c *Config) { c.StabilityDelay = time.Second }
	d := e.start(hooks{})

	path := filepath.Join(e.dir, "P00001.7")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	want := content("P00001", 40*4096)
	tick := time.NewTicker(20 * time.Millisecond) // the scanner's pace, not synchronisation
	var lastWrite time.Time                       // taken before the write: the daemon cannot see it earlier
	for i := 0; i < 40; i++ {
		lastWrite = time.Now()
		if _, err := f.Write(want[i*4096 : (i+1)*4096]); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	tick.Stop()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.dir)

	gs := e.groupsWhen(d, "group done", allFinished(1))
	g := gs[0]
	if g.Status != StatusDone || len(g.Files) != 1 {
		t.Fatalf("group %+v, want one done group of one file", g)
	}
	if f := g.Files[0]; f.Size != int64(len(want)) || f.SHA256 != sha(want) {
		t.Errorf("recorded file %d bytes sha %s, want the complete %d bytes sha %s", f.Size, f.SHA256, len(want), sha(want))
	}
	// Measured from the last write to the moment the file was judged
	// complete (not to the group's closing, which adds the grouping
	// timeout), so a delay even slightly short of the setting fails.
	if ready := e.completeAt(path); ready.IsZero() {
		t.Errorf("no %q record for %s", "file complete", path)
	} else if ready.Sub(lastWrite) < time.Second {
		t.Errorf("file judged complete %s after the last write, want at least the stability delay (1s)", ready.Sub(lastWrite))
	}
	jobs := serverJobs(t, e.ctx, srv)
	if len(jobs) != 1 || jobs[0].JobID != g.JobID || jobs[0].Files[0].SHA256 != sha(want) || jobs[0].Options["method"] != "copy" {
		t.Errorf("server jobs %+v, want the one job %s with the complete file and the options", jobs, g.JobID)
	}
	e.checkResults(g, map[string][]byte{"P00001.7": want})
	if recs := e.logRecords("group submitted"); len(recs) != 1 || recs[0]["job_id"] != g.JobID || recs[0]["group"] != g.Name {
		t.Errorf("log records of submission %v, want one with job_id %s", recs, g.JobID)
	}
	d.stop(t)
	checkUntouched(t, e.dir, before)
}

// TestGrouping: files close together are one job, files far apart two;
// a backlog found at start splits where modification times are apart.
func TestGrouping(t *testing.T) {
	e := newEnv(t)
	srv := e.startServer(servertest.Options{})
	e.mod = func(c *Config) { c.GroupingTimeout = 600 * time.Millisecond }

	// A backlog written while no daemon ran: two exams an hour apart.
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	inputs := map[string][]byte{}
	for i, name := range []string{"A1.7", "A2.7", "B1.7", "B2.7"} {
		data := content(name, 1000+i)
		inputs[name] = data
		p := filepath.Join(e.dir, name)
		writeFile(t, p, data)
		m := base.Add(time.Duration(i%2) * 100 * time.Millisecond)
		if name[0] == 'B' {
			m = m.Add(time.Hour)
		}
		if err := os.Chtimes(p, m, m); err != nil {
			t.Fatal(err)
		}
	}
	d := e.start(hooks{})
	e.groupsWhen(d, "backlog in two groups", allFinished(2))

	// Live: three files together, then two more once that group closed.
	for _, name := range []string{"C1.7", "C2.7", "C3.7"} {
		inputs[name] = content(name, 2000)
		writeFile(t, filepath.Join(e.dir, name), inputs[name])
	}
	e.groupsWhen(d, "C group recorded", func(gs []Group) bool { return len(gs) == 3 })
	for _, name := range []string{"D1.7", "D2.7"} {
		inputs[name] = content(name, 3000)
		writeFile(t, filepath.Join(e.dir, name), inputs[name])
	}
	gs := e.groupsWhen(d, "all groups done", allFinished(4))
	before := snapshot(t, e.dir)

	var got [][]string
	for _, g := range gs {
		if g.Status != StatusDone {
			t.Errorf("group %s is %s (%s)", g.Name, g.Status, g.Error)
		}
		names := fileNames(g)
		slices.Sort(names)
		got = append(got, names)
		in := map[string][]byte{}
		for _, n := range names {
			in[n] = inputs[n]
		}
		e.checkResults(g, in)
	}
	want := [][]string{{"A1.7", "A2.7"}, {"B1.7", "B2.7"}, {"C1.7", "C2.7", "C3.7"}, {"D1.7", "D2.7"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 4 {
		t.Errorf("server has %d jobs, want 4", len(jobs))
	}
	d.stop(t)
	checkUntouched(t, e.dir, before)
}

// TestIgnored: names not matching the pattern, directories, symlinks,
// FIFOs and names the server would refuse are left alone.
func TestIgnored(t *testing.T) {
	e := newEnv(t)
	srv := e.startServer(servertest.Options{})
	outside := filepath.Join(t.TempDir(), "real.7")
	writeFile(t, outside, []byte("not in the directory"))
	writeFile(t, filepath.Join(e.dir, "notes.txt"), []byte("not a raw file"))
	writeFile(t, filepath.Join(e.dir, "P1.7.tmp"), []byte("partial"))
	if err := os.Mkdir(filepath.Join(e.dir, "sub.7"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.dir, "sub.7", "inner.7"), []byte("in a subdirectory"))
	if err := os.Symlink(outside, filepath.Join(e.dir, "link.7")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(e.dir, "pipe.7"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.dir, "bad\x01name.7"), []byte("a name the server refuses"))
	d := e.start(hooks{})
	good := content("good", 500)
	writeFile(t, filepath.Join(e.dir, "good.7"), good)
	before := snapshot(t, e.dir)

	e.groupsWhen(d, "good group done", allFinished(1))
	// The refused name was looked at, and left alone.
	e.groupsWhen(d, "bad name warned about", func([]Group) bool {
		return strings.Count(e.logs.String(), `"msg":"file name cannot be sent`) >= 1
	})
	gs, _ := d.Groups(e.ctx)
	if len(gs) != 1 || !slices.Equal(fileNames(gs[0]), []string{"good.7"}) || gs[0].Status != StatusDone {
		t.Fatalf("groups %+v, want only good.7, done", gs)
	}
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 {
		t.Errorf("server has %d jobs, want 1", len(jobs))
	}
	d.stop(t)
	checkUntouched(t, e.dir, before)
}

// blockScript copies inputs once the file RELEASE exists beside the
// config (the job's working directory is not known, so it is passed as
// an absolute path through the script text).
func blockScript(release string) string {
	return `#!/bin/sh
set -eu
in="$1"; out="$3"
while [ ! -e "` + release + `" ]; do sleep 0.02; done
for f in "$in"/*; do cp "$f" "$out/$(basename "$f").out"; done
`
}

// bigSize is the size of the file of the restart phases that cut a
// transfer: far more than one progress report, so the first report comes
// in the middle.
const bigSize = 4 << 20

// midway is a transfer hook that stops the daemon at the first progress
// report that is not the last.
func midway(_ *Group, done, total int64) bool { return done < total }

// TestRestart stops the daemon in every phase of a group — open (found,
// not yet closed), recorded but not submitted, uploading, submitted but
// not recorded, waiting, before, during and after the download — and
// starts it again: each group ends up done, with one job and its complete
// results.
func TestRestart(t *testing.T) {
	phases := []struct {
		name string
		size int // of the file X.7
		// stop brings the first daemon down at the phase.
		stop func(t *testing.T, e *env, release string) (between func())
	}{
		{"open-group", 777, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			// Long enough that the group is certainly still open when the
			// daemon stops, which happens as soon as the file joined it.
			e.mod = func(c *Config) { c.GroupingTimeout = 20 * time.Second }
			d := e.start(hooks{})
			p := filepath.Join(e.dir, "X.7")
			writeFile(t, p, content("X", 777))
			e.logWhen("file complete", forFile(p))
			d.stop(t)
			if recs := e.logRecords("group detected"); len(recs) != 0 {
				t.Fatalf("group recorded before the stop: %v", recs)
			}
			e.logWhen("open group left unrecorded; its files will be found again at the next start", nil)
			e.mod = nil
			return func() {}
		}},
		{"detected", 777, func(t *testing.T, e *env, release string) func() {
			// The server is down: the group is recorded, not submitted.
			start := e.serverLater(servertest.Options{})
			d := e.start(hooks{})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 777))
			e.groupsWhen(d, "group pending", func(gs []Group) bool {
				return len(gs) == 1 && gs[0].Status == StatusPending && len(e.logRecords("submission failed; retrying")) > 0
			})
			d.stop(t)
			return func() { start() }
		}},
		{"uploading", bigSize, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			d := e.start(hooks{uploading: midway})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", bigSize))
			d.crashed(t)
			return func() {}
		}},
		{"submitted-unrecorded", 777, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			d := e.start(hooks{afterSubmit: func(*Group) bool { return true }})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 777))
			d.crashed(t)
			return func() {}
		}},
		{"waiting", 777, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{Script: blockScript(release)})
			d := e.start(hooks{})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 777))
			e.groupsWhen(d, "group submitted", func(gs []Group) bool {
				return len(gs) == 1 && gs[0].Status == StatusSubmitted
			})
			d.stop(t)
			return func() {}
		}},
		{"before-download", 777, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			d := e.start(hooks{beforeFetch: func(*Group) bool { return true }})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 777))
			d.crashed(t)
			return func() {}
		}},
		{"downloading", bigSize, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			d := e.start(hooks{downloading: midway})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", bigSize))
			d.crashed(t)
			return func() {}
		}},
		{"after-download", 777, func(t *testing.T, e *env, release string) func() {
			e.startServer(servertest.Options{})
			d := e.start(hooks{afterFetch: func(*Group) bool { return true }})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 777))
			d.crashed(t)
			return func() {}
		}},
	}
	for _, p := range phases {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel() // each phase has its own server, directories and daemon
			e := newEnv(t)
			release := filepath.Join(t.TempDir(), "RELEASE")
			between := p.stop(t, e, release)
			before := snapshot(t, e.dir)
			between()
			writeFile(t, release, nil)
			d := e.start(hooks{})
			gs := e.groupsWhen(d, "group done after restart", allFinished(1))
			g := gs[0]
			if g.Status != StatusDone {
				t.Fatalf("group %s %s: %s", g.Name, g.Status, g.Error)
			}
			if len(g.Files) != 1 || g.Files[0].Size != int64(p.size) {
				t.Errorf("group files %+v, want X.7 of %d bytes", g.Files, p.size)
			}
			e.checkResults(g, map[string][]byte{"X.7": content("X", p.size)})
			if jobs := serverJobs(t, e.ctx, e.srv); len(jobs) != 1 || jobs[0].JobID != g.JobID {
				t.Errorf("server has %d jobs (%+v), want just %s", len(jobs), jobs, g.JobID)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(e.downDir, ".*")); len(leftovers) != 0 {
				t.Errorf("partial downloads left behind: %v", leftovers)
			}
			d.stop(t)
			checkUntouched(t, e.dir, before)
		})
	}
}

// TestServerDownThenUp: files arrive while the server is down; the
// daemon keeps finding them, and they go through once it is up.
func TestServerDownThenUp(t *testing.T) {
	e := newEnv(t)
	start := e.serverLater(servertest.Options{})
	d := e.start(hooks{})
	writeFile(t, filepath.Join(e.dir, "E1.7"), content("E1", 100))
	e.groupsWhen(d, "first group pending", func(gs []Group) bool { return len(gs) == 1 })
	writeFile(t, filepath.Join(e.dir, "E2.7"), content("E2", 100))
	e.groupsWhen(d, "second group pending while the server is down", func(gs []Group) bool {
		return len(gs) == 2 && countStatus(gs, StatusPending) == 2 && len(e.logRecords("submission failed; retrying")) >= 2
	})
	srv := start()
	gs := e.groupsWhen(d, "both groups done", allFinished(2))
	for _, g := range gs {
		if g.Status != StatusDone {
			t.Errorf("group %s %s: %s", g.Name, g.Status, g.Error)
		}
	}
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 2 {
		t.Errorf("server has %d jobs, want 2", len(jobs))
	}
}

const failBadScript = `#!/bin/sh
set -eu
in="$1"; out="$3"
for f in "$in"/*; do
  case "$f" in *bad*) echo "cannot reconstruct $(basename "$f")" >&2; exit 7;; esac
  cp "$f" "$out/$(basename "$f").out"
done
`

// TestFailedJob: a failing job is recorded as failed and not submitted
// again; with CLIENT_DAEMON_MAX_JOB_ATTEMPTS = 2 it is submitted twice.
func TestFailedJob(t *testing.T) {
	for _, attempts := range []int{1, 2} {
		t.Run("attempts="+itoa(attempts), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			srv := e.startServer(servertest.Options{Script: failBadScript})
			e.mod = func(c *Config) { c.MaxAttempts = attempts }
			d := e.start(hooks{})
			writeFile(t, filepath.Join(e.dir, "bad.7"), content("bad", 100))
			e.groupsWhen(d, "bad group failed", allFinished(1))
			// A later group goes through: the failed one was not in its way.
			writeFile(t, filepath.Join(e.dir, "good.7"), content("good", 100))
			gs := e.groupsWhen(d, "good group done", allFinished(2))
			bad, good := gs[0], gs[1]
			if bad.Status != StatusFailed || bad.JobState != "failed" || bad.Attempt != attempts || len(bad.EarlierJobs) != attempts-1 {
				t.Errorf("bad group: %s, job %s, attempt %d, earlier %v", bad.Status, bad.JobState, bad.Attempt, bad.EarlierJobs)
			}
			// The job's own error: the script's exit status and its stderr.
			const jobErr = "the script exited with status 7: cannot reconstruct bad.7"
			if !strings.Contains(bad.Error, "job failed") || !strings.Contains(bad.Error, jobErr) {
				t.Errorf("bad group error %q, want the job's failure %q", bad.Error, jobErr)
			}
			if s := e.summary(bad); s.Status != StatusFailed || s.JobID != bad.JobID {
				t.Errorf("summary of the failed group: %+v", s)
			}
			if good.Status != StatusDone {
				t.Errorf("good group %s: %s", good.Status, good.Error)
			}
			if recs := e.logRecords("job failed"); len(recs) != 1 || recs[0]["job_id"] != bad.JobID ||
				recs[0]["group"] != bad.Name || recs[0]["err"] != jobErr || recs[0]["exit_code"] != 7.0 {
				t.Errorf("failure log records %v, want one for job %s with err %q and exit_code 7", recs, bad.JobID, jobErr)
			}
			if recs := e.logRecords("job failed; submitting the group again"); len(recs) != attempts-1 ||
				len(recs) == 1 && (recs[0]["err"] != jobErr || recs[0]["exit_code"] != 7.0 || !slices.Contains(bad.EarlierJobs, str(recs[0]["job_id"]))) {
				t.Errorf("retry log records %v, want %d with err %q", recs, attempts-1, jobErr)
			}
			jobs := serverJobs(t, e.ctx, srv)
			if len(jobs) != attempts+1 {
				t.Errorf("server has %d jobs, want %d", len(jobs), attempts+1)
			}
			// After a restart, the failed group is still not resubmitted.
			d.stop(t)
			d = e.start(hooks{})
			writeFile(t, filepath.Join(e.dir, "later.7"), content("later", 100))
			e.groupsWhen(d, "later group done", allFinished(3))
			if jobs := serverJobs(t, e.ctx, srv); len(jobs) != attempts+2 {
				t.Errorf("after restart the server has %d jobs, want %d", len(jobs), attempts+2)
			}
		})
	}
}

// catScript writes one result: the inputs one after the other.
const catScript = `#!/bin/sh
set -eu
cat "$1"/* > "$3/all.out"
`

// TestThousandFiles: a thousand files in four bursts of different sizes
// (600, 200, 100, 100) make four groups by the timeout rule alone (the
// largest far above any other test's group), and the daemon holds none of
// their data: its heap grows by its bookkeeping of the files, not with
// their 16 MiB. (Job messages carry every file with its SHA-256; with
// protocol.MaxMessageSize = 16 MiB and MaxFileListBytes = 4 MiB a job of
// 600 files, and the queue of all four, fit easily.)
func TestThousandFiles(t *testing.T) {
	const size = 16 << 10
	bursts := []int{600, 200, 100, 100}
	e := newEnv(t)
	srv := e.startServer(servertest.Options{Script: catScript})
	// A burst is written in well under a second; the timeout leaves room
	// for a slow machine without letting two bursts (written only once
	// the previous group was recorded) join.
	e.mod = func(c *Config) { c.GroupingTimeout = time.Second }
	d := e.start(hooks{})
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	start := heap()
	total := 0
	for b, n := range bursts {
		for i := 0; i < n; i++ {
			name := "S" + itoa(b) + "_" + itoa(i) + ".7"
			writeFile(t, filepath.Join(e.dir, name), content(name, size))
		}
		total += n
		e.groupsWhen(d, "burst recorded", func(gs []Group) bool { return len(gs) == b+1 })
	}
	gs := e.groupsWhen(d, "all groups done", allFinished(len(bursts)))
	for i, g := range gs {
		if g.Status != StatusDone || len(g.Files) != bursts[i] {
			t.Errorf("group %d: %s with %d files (%s), want done with %d", i, g.Status, len(g.Files), g.Error, bursts[i])
		}
		prefix := "S" + itoa(i) + "_"
		for _, f := range g.Files {
			if !strings.HasPrefix(filepath.Base(f.Path), prefix) {
				t.Errorf("group %d holds %s of another burst", i, f.Path)
				break
			}
		}
		if info, err := os.Stat(filepath.Join(e.downDir, g.Name, "all.out")); err != nil || info.Size() != int64(bursts[i]*size) {
			t.Errorf("group %d: result %v, want %d bytes", i, err, bursts[i]*size)
		}
	}
	jobs := serverJobs(t, e.ctx, srv)
	if len(jobs) != len(bursts) {
		t.Fatalf("server has %d jobs, want %d", len(jobs), len(bursts))
	}
	files := map[int]int{}
	for _, j := range jobs {
		if j.State != "succeeded" {
			t.Errorf("job %s %s", j.JobID, j.State)
		}
		files[len(j.Files)]++
	}
	if diff := cmp.Diff(map[int]int{600: 1, 200: 1, 100: 2}, files); diff != "" {
		t.Errorf("server jobs by file count (-want +got):\n%s", diff)
	}
	// What the daemon must keep is a small record of each file still in
	// the directory: the bound is perFile a file, whatever the files'
	// size. The growth measured is about 1.2 KiB a file (amd64, with and
	// without -race), and counts the test's server, which runs in this
	// process too, and the test's log buffer (about 0.4 KiB a file): the
	// bound leaves three times that. A daemon that kept a quarter of each
	// file's contents, or a buffer per file, would not pass.
	const perFile = 4 << 10
	data := int64(total * size)
	if grown := int64(heap()) - int64(start); grown > int64(total*perFile) {
		t.Errorf("heap grew by %d KiB over %d files of %d KiB (%d KiB in all), want at most %d KiB a file",
			grown>>10, total, size>>10, data>>10, perFile>>10)
	} else {
		t.Logf("heap grew by %d KiB over %d files of %d KiB (%d KiB in all)", grown>>10, total, size>>10, data>>10)
	}
}

// TestChangedBeforeSubmit: a file that changes after its group was
// recorded (while the server is down) is left out of that group and found
// again as a new file; nothing is lost and nothing stale is sent.
func TestChangedBeforeSubmit(t *testing.T) {
	e := newEnv(t)
	start := e.serverLater(servertest.Options{})
	d := e.start(hooks{})
	p := filepath.Join(e.dir, "X.7")
	writeFile(t, p, content("X", 100))
	e.groupsWhen(d, "group pending", func(gs []Group) bool { return len(gs) == 1 })
	final := content("X2", 300)
	writeFile(t, p, final)
	e.groupsWhen(d, "changed file in a second group", func(gs []Group) bool { return len(gs) == 2 })
	srv := start()
	gs := e.groupsWhen(d, "both groups finished", allFinished(2))
	if gs[0].Status != StatusFailed || len(gs[0].Files) != 0 || !strings.Contains(gs[0].Error, "changed or vanished") {
		t.Errorf("first group: %s with %d files (%s), want failed and empty", gs[0].Status, len(gs[0].Files), gs[0].Error)
	}
	if gs[1].Status != StatusDone || len(gs[1].Files) != 1 || gs[1].Files[0].SHA256 != sha(final) {
		t.Errorf("second group: %+v, want done with the final file", gs[1])
	}
	e.checkResults(gs[1], map[string][]byte{"X.7": final})
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 {
		t.Errorf("server has %d jobs, want 1", len(jobs))
	}
}

// TestRefused: a group the server refuses for good (more files than its
// MAX_FILES_PER_JOB) is recorded as failed, not retried, and does not hold
// up the next group.
func TestRefused(t *testing.T) {
	e := newEnv(t)
	srv := e.startServer(servertest.Options{Extra: map[string]string{"MAX_FILES_PER_JOB": "1"}})
	d := e.start(hooks{})
	writeFile(t, filepath.Join(e.dir, "R1.7"), content("R1", 10))
	writeFile(t, filepath.Join(e.dir, "R2.7"), content("R2", 10))
	e.groupsWhen(d, "two-file group finished", allFinished(1))
	writeFile(t, filepath.Join(e.dir, "R3.7"), content("R3", 10))
	gs := e.groupsWhen(d, "next group finished", allFinished(2))
	if gs[0].Status != StatusFailed || !strings.Contains(gs[0].Error, "refused") || gs[0].JobID != "" {
		t.Errorf("refused group: %s job %q (%s)", gs[0].Status, gs[0].JobID, gs[0].Error)
	}
	if gs[1].Status != StatusDone {
		t.Errorf("next group: %s (%s)", gs[1].Status, gs[1].Error)
	}
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 {
		t.Errorf("server has %d jobs, want 1", len(jobs))
	}
}

// TestStateLocked: two daemons never share a state directory.
func TestStateLocked(t *testing.T) {
	e := newEnv(t)
	e.addr, e.key = freeAddr(t), "x"
	w, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := New(e.config()); err == nil || !strings.Contains(err.Error(), "in use by another recon watch") {
		t.Fatalf("second New on the same state: %v, want in use", err)
	}
}

// TestConfigChecks: directories of the daemon inside the scanner's are
// refused, and so are bad options.
func TestConfigChecks(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Dir = "" }, "CLIENT_WATCH_DIRECTORY is not set"},
		{func(c *Config) { c.DownloadDir = filepath.Join(c.Dir, "out") }, "CLIENT_DOWNLOAD_DIR"},
		{func(c *Config) { c.StateDir = c.Dir }, "CLIENT_DAEMON_STATE_DIR"},
		{func(c *Config) { c.LogFile = filepath.Join(c.Dir, "watch.log") }, "CLIENT_DAEMON_LOG_FILEPATH"},
		{func(c *Config) { c.Options = map[string]string{"bad key": "1"} }, "CLIENT_DAEMON_RECON_OPTIONS_JSON"},
	} {
		e.mod = tc.mod
		w, err := New(e.config())
		if err == nil {
			w.Close()
			t.Errorf("New accepted a config, want an error with %q", tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want %q", err, tc.want)
		}
	}
}

// TestSubmissionID: the id depends on every file's path, size, mtime and
// hash, on the options and on the attempt, not on the order of the files.
func TestSubmissionID(t *testing.T) {
	m := time.Unix(1700000000, 123)
	a := File{Path: "/s/a.7", Size: 1, ModTime: m, SHA256: strings.Repeat("a", 64)}
	b := File{Path: "/s/b.7", Size: 2, ModTime: m, SHA256: strings.Repeat("b", 64)}
	id := SubmissionID([]File{a, b}, 1, nil)
	if id != SubmissionID([]File{b, a}, 1, nil) {
		t.Error("order of files changes the id")
	}
	if len(id) > 128 || !strings.HasPrefix(id, "watch-") {
		t.Errorf("id %q", id)
	}
	for _, other := range [][]File{
		{a},
		{a, {Path: "/s/c.7", Size: 2, ModTime: m, SHA256: b.SHA256}},
		{a, {Path: b.Path, Size: 3, ModTime: m, SHA256: b.SHA256}},
		{a, {Path: b.Path, Size: 2, ModTime: m.Add(1), SHA256: b.SHA256}},
		{a, {Path: b.Path, Size: 2, ModTime: m, SHA256: strings.Repeat("c", 64)}},
	} {
		if SubmissionID(other, 1, nil) == id {
			t.Errorf("files %v give the same id", other)
		}
	}
	if id2 := SubmissionID([]File{a, b}, 2, nil); id2 == id || id2 != id+"-a2" {
		t.Errorf("second attempt id %q", id2)
	}
	if SubmissionID([]File{a, b}, 1, map[string]string{"method": "pics"}) == id {
		t.Error("options do not change the id")
	}
}
