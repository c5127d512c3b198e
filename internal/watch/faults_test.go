//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package watch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestGroupCap: 1001 files found complete together (a backlog, all
// written in the same second) make a group of MaxGroupFiles and one of the
// file left over, though the timeout rules alone would make them one.
func TestGroupCap(t *testing.T) {
	const n = MaxGroupFiles + 1
	const size = 64
	e := newEnv(t)
	srv := e.startServer(servertest.Options{Script: catScript})
	// Far longer than the whole test needs: only the cap may close the
	// first group early.
	e.mod = func(c *Config) { c.GroupingTimeout = 2 * time.Second }
	m := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range n {
		name := "F" + leftPad(i) + ".7"
		p := filepath.Join(e.dir, name)
		writeFile(t, p, content(name, size))
		if err := os.Chtimes(p, m, m); err != nil {
			t.Fatal(err)
		}
	}
	d := e.start(hooks{})
	gs := e.groupsWhen(d, "both groups finished", allFinished(2))
	// Files found together join in mtime order, then by path: the cap
	// leaves the last name over.
	last := "F" + leftPad(n-1) + ".7"
	if g := gs[0]; g.Status != StatusDone || len(g.Files) != MaxGroupFiles {
		t.Errorf("first group: %s with %d files (%s), want done with %d", g.Status, len(g.Files), g.Error, MaxGroupFiles)
	} else {
		for _, f := range g.Files {
			if filepath.Base(f.Path) == last {
				t.Errorf("first group holds %s, want it in the second", last)
			}
		}
	}
	if g := gs[1]; g.Status != StatusDone || len(g.Files) != 1 || filepath.Base(g.Files[0].Path) != last {
		t.Errorf("second group: %s with %v (%s), want done with %s", g.Status, fileNames(g), g.Error, last)
	}
	for i, g := range gs {
		want := int64(len(g.Files) * size)
		if info, err := os.Stat(filepath.Join(e.downDir, g.Name, "all.out")); err != nil || info.Size() != want {
			t.Errorf("group %d: result %v, want %d bytes", i, err, want)
		}
	}
	if recs := e.logRecords("group detected"); len(recs) != 2 || recs[0]["files"] != float64(MaxGroupFiles) || recs[1]["files"] != 1.0 {
		t.Errorf("group detected records %v, want one of %d files and one of 1", recs, MaxGroupFiles)
	}
	files := map[int]int{}
	for _, j := range serverJobs(t, e.ctx, srv) {
		files[len(j.Files)]++
	}
	if files[MaxGroupFiles] != 1 || files[1] != 1 || len(files) != 2 {
		t.Errorf("server jobs by file count %v, want one of %d and one of 1", files, MaxGroupFiles)
	}
}

// leftPad formats i with four digits, so names sort as numbers.
func leftPad(i int) string {
	s := itoa(i)
	return strings.Repeat("0", max(0, 4-len(s))) + s
}

// TestDirectoryGone: the watched directory disappears while the daemon
// runs (a share unmounted, a directory renamed or removed). The error is
// logged once, nothing is submitted for the files that seem gone, pending
// groups wait with their files, and once the directory is back its files,
// old and new, go through.
func TestDirectoryGone(t *testing.T) {
	t.Run("renamed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		start := e.serverLater(servertest.Options{})
		d := e.startDetecting(hooks{})
		// The server is down: the group stays pending.
		writeFile(t, filepath.Join(e.dir, "B.7"), content("B", 100))
		e.groupsWhen(d, "group pending", func(gs []Group) bool {
			return len(gs) == 1 && gs[0].Status == StatusPending && len(e.logRecords("submission failed; retrying")) > 0
		})
		away := e.dir + ".away"
		if err := os.Rename(e.dir, away); err != nil {
			t.Fatal(err)
		}
		rec := e.logWhen("cannot read the watched directory; will try again", nil)
		if rec["level"] != "ERROR" || rec["dir"] != e.dir || !strings.Contains(str(rec["err"]), "no such file") {
			t.Errorf("directory error record %v, want an ERROR naming %s and the error", rec, e.dir)
		}
		// With the server up, the only thing in the way is the directory.
		srv := start()
		dirRetries := func() int {
			n := 0
			for _, r := range e.logRecords("submission failed; retrying") {
				if strings.Contains(str(r["err"]), "watched directory") {
					n++
				}
			}
			return n
		}
		seen := dirRetries()
		servertest.Eventually(t, time.Until(deadline(e.ctx)), "submitter waits for the directory with the server up", func() bool {
			return dirRetries() > seen
		})
		// A file written meanwhile, at the directory's new place.
		writeFile(t, filepath.Join(away, "C.7"), content("C", 200))
		gs, err := d.Groups(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != 1 || gs[0].Status != StatusPending || len(gs[0].Files) != 1 {
			t.Fatalf("groups while the directory is away: %+v, want the one pending group with its file", gs)
		}
		if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 0 {
			t.Fatalf("server has %d jobs while the directory is away, want none", len(jobs))
		}
		if err := os.Rename(away, e.dir); err != nil {
			t.Fatal(err)
		}
		gs = e.groupsWhen(d, "both groups done", allFinished(2))
		for i, want := range []string{"B.7", "C.7"} {
			if g := gs[i]; g.Status != StatusDone || len(g.Files) != 1 || filepath.Base(g.Files[0].Path) != want {
				t.Errorf("group %d: %s with %v (%s), want done with %s", i, g.Status, fileNames(g), g.Error, want)
			}
		}
		e.checkResults(gs[0], map[string][]byte{"B.7": content("B", 100)})
		e.checkResults(gs[1], map[string][]byte{"C.7": content("C", 200)})
		e.logWhen("watched directory readable again", nil)
		if recs := e.logRecords("cannot read the watched directory; will try again"); len(recs) != 1 {
			t.Errorf("%d directory error records, want 1 (logged once): %v", len(recs), recs)
		}
		if recs := e.logRecords("file changed or vanished before it was submitted; left out of the group"); len(recs) != 0 {
			t.Errorf("files left out while the directory was away: %v", recs)
		}
		if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 2 {
			t.Errorf("server has %d jobs, want 2", len(jobs))
		}
	})
	t.Run("removed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		srv := e.startServer(servertest.Options{})
		d := e.startDetecting(hooks{})
		writeFile(t, filepath.Join(e.dir, "A.7"), content("A", 100))
		e.oneDoneGroup(d, "A.7")
		if err := os.RemoveAll(e.dir); err != nil {
			t.Fatal(err)
		}
		e.logWhen("cannot read the watched directory; will try again", nil)
		if err := os.Mkdir(e.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(e.dir, "N.7"), content("N", 300))
		gs := e.groupsWhen(d, "new file's group done", allFinished(2))
		if g := gs[1]; g.Status != StatusDone || len(g.Files) != 1 || filepath.Base(g.Files[0].Path) != "N.7" {
			t.Fatalf("second group: %s with %v (%s), want done with N.7", g.Status, fileNames(g), g.Error)
		}
		e.checkResults(gs[1], map[string][]byte{"N.7": content("N", 300)})
		e.logWhen("watched directory readable again", nil)
		if recs := e.logRecords("cannot read the watched directory; will try again"); len(recs) != 1 {
			t.Errorf("%d directory error records, want 1 (logged once): %v", len(recs), recs)
		}
		if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 2 {
			t.Errorf("server has %d jobs, want 2", len(jobs))
		}
		if err := d.stop(t); err != nil {
			t.Errorf("Run: %v, want nil", err)
		}
	})
}

// TestJobLost: the server loses its state (stopped, its data wiped,
// started again on the same port) while the daemon waits for a job. The
// group is failed with a clear error, not submitted again, and later
// groups go through.
func TestJobLost(t *testing.T) {
	e := newEnv(t)
	release := filepath.Join(t.TempDir(), "RELEASE")
	start := e.serverLater(servertest.Options{Script: blockScript(release)})
	srv := start()
	d := e.start(hooks{})
	writeFile(t, filepath.Join(e.dir, "L.7"), content("L", 100))
	gs := e.groupsWhen(d, "group submitted", func(gs []Group) bool {
		return len(gs) == 1 && gs[0].Status == StatusSubmitted
	})
	lost := gs[0]
	srv.Stop(t)
	if err := os.RemoveAll(filepath.Join(srv.Dir, "data")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, release, nil)
	srv = start()
	gs = e.groupsWhen(d, "lost job's group failed", allFinished(1))
	g := gs[0]
	if g.Status != StatusFailed || g.JobID != lost.JobID || !strings.Contains(g.Error, "the server no longer knows the job") {
		t.Errorf("group %s: %s, job %s (%s), want failed, job %s no longer known", g.Name, g.Status, g.JobID, g.Error, lost.JobID)
	}
	if s := e.summary(g); s.Status != StatusFailed || s.JobID != lost.JobID || s.Error != g.Error {
		t.Errorf("summary of the lost group: %+v", s)
	}
	if recs := e.logRecords("job lost"); len(recs) != 1 || recs[0]["level"] != "ERROR" ||
		recs[0]["group"] != g.Name || recs[0]["job_id"] != lost.JobID || str(recs[0]["err"]) == "" {
		t.Errorf("job lost records %v, want one ERROR with the group, job and error", recs)
	}
	// A later group goes through: the lost one was not in its way, and is
	// not submitted again.
	writeFile(t, filepath.Join(e.dir, "M.7"), content("M", 100))
	gs = e.groupsWhen(d, "later group done", allFinished(2))
	if gs[1].Status != StatusDone {
		t.Errorf("later group: %s (%s)", gs[1].Status, gs[1].Error)
	}
	e.checkResults(gs[1], map[string][]byte{"M.7": content("M", 100)})
	if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 || jobs[0].JobID != gs[1].JobID {
		t.Errorf("server jobs %+v, want only the later group's %s", jobs, gs[1].JobID)
	}
	if recs := e.logRecords("group submitted"); len(recs) != 2 {
		t.Errorf("%d submission records, want 2 (the lost group once): %v", len(recs), recs)
	}
}

// TestResultsExpired: a job's results expire on the server
// (RESULT_RETENTION_HOURS, here its 3.6 s minimum) while the daemon is
// stopped after the job ended. At the next start the group is failed
// with a clear error.
func TestResultsExpired(t *testing.T) {
	e := newEnv(t)
	srv := e.startServer(servertest.Options{Extra: map[string]string{"RESULT_RETENTION_HOURS": "0.001"}})
	var jobID string
	d := e.start(hooks{beforeFetch: func(g *Group) bool { jobID = g.JobID; return true }})
	writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 100))
	d.crashed(t)
	c := srv.Dial(t)
	var job *client.Job
	servertest.Eventually(t, time.Until(deadline(e.ctx)), "results expired on the server", func() bool {
		var err error
		job, err = c.Job(e.ctx, jobID)
		return err == nil && job.ResultsGone
	})
	if job.State != "succeeded" || job.Delivered || len(job.Results) != 1 {
		t.Fatalf("server job %+v, want succeeded with one result, not delivered", job)
	}
	d = e.start(hooks{})
	gs := e.groupsWhen(d, "group failed", allFinished(1))
	g := gs[0]
	const want = "the results expired on the server before they were downloaded"
	if g.Status != StatusFailed || g.JobID != jobID || g.JobState != "succeeded" || g.Error != want {
		t.Errorf("group %s: %s, job %s %s (%s), want failed with %q", g.Name, g.Status, g.JobID, g.JobState, g.Error, want)
	}
	if s := e.summary(g); s.Status != StatusFailed || s.Error != want || len(s.Results) != 1 {
		t.Errorf("summary of the expired group: %+v", s)
	}
	if recs := e.logRecords("results not downloaded"); len(recs) != 1 || recs[0]["level"] != "ERROR" || recs[0]["err"] != want {
		t.Errorf("results not downloaded records %v, want one ERROR with %q", recs, want)
	}
	if _, err := os.Stat(filepath.Join(e.downDir, g.Name, "X.7.out")); err == nil {
		t.Error("a result of the expired job is in the download directory")
	}
}

// TestDeliveredDamaged: the daemon stops after downloading and
// acknowledging a job's results but before recording it; meanwhile a
// result in the group's directory is changed or removed. At the next
// start the server has already deleted the results (delivered), so
// nothing can be fetched again: the group is failed, naming the file.
func TestDeliveredDamaged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string) error
	}{
		{"changed", func(p string) error { return os.WriteFile(p, []byte("not the result"), 0o644) }},
		{"removed", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			srv := e.startServer(servertest.Options{})
			d := e.start(hooks{afterFetch: func(*Group) bool { return true }})
			writeFile(t, filepath.Join(e.dir, "X.7"), content("X", 100))
			d.crashed(t)
			dirs, err := filepath.Glob(filepath.Join(e.downDir, "*", "X.7.out"))
			if err != nil || len(dirs) != 1 {
				t.Fatalf("downloaded results %v (%v), want one X.7.out", dirs, err)
			}
			if err := tc.damage(dirs[0]); err != nil {
				t.Fatal(err)
			}
			d = e.start(hooks{})
			gs := e.groupsWhen(d, "group finished", allFinished(1))
			g := gs[0]
			if g.Status != StatusFailed || g.JobState != "succeeded" ||
				!strings.Contains(g.Error, "the results were delivered but are not all in "+filepath.Dir(dirs[0])) ||
				!strings.Contains(g.Error, "X.7.out") {
				t.Errorf("group %s: %s, job %s (%s), want failed naming the directory and X.7.out", g.Name, g.Status, g.JobState, g.Error)
			}
			if s := e.summary(g); s.Status != StatusFailed || s.Error != g.Error {
				t.Errorf("summary of the damaged group: %+v", s)
			}
			if recs := e.logRecords("results not downloaded"); len(recs) != 1 || recs[0]["level"] != "ERROR" || recs[0]["group"] != g.Name {
				t.Errorf("results not downloaded records %v, want one ERROR for %s", recs, g.Name)
			}
			// Not fetched again (the server has nothing left to send), and
			// not submitted again.
			if jobs := serverJobs(t, e.ctx, srv); len(jobs) != 1 || !jobs[0].Delivered {
				t.Errorf("server jobs %+v, want the one job, delivered", jobs)
			}
			if recs := e.logRecords("group submitted"); len(recs) != 1 {
				t.Errorf("%d submission records, want 1: %v", len(recs), recs)
			}
		})
	}
}
