//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package watch

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/servertest"
)

// startDetecting starts a daemon and waits until its detector watches the
// directory and has scanned it once, so that a file written afterwards is
// new to it.
func (e *env) startDetecting(h hooks) *daemon {
	e.t.Helper()
	ready := make(chan struct{})
	h.detecting = func() { close(ready) }
	d := e.start(h)
	select {
	case <-ready:
	case err := <-d.done:
		e.t.Fatalf("daemon stopped before detecting: %v", err)
	case <-e.ctx.Done():
		e.t.Fatal("detector did not start")
	}
	return d
}

// oneDoneGroup waits for one finished group and checks that it is done
// and holds exactly the named files.
func (e *env) oneDoneGroup(d *daemon, names ...string) Group {
	e.t.Helper()
	gs := e.groupsWhen(d, "group done", allFinished(1))
	g := gs[0]
	got := fileNames(g)
	slices.Sort(got)
	slices.Sort(names)
	if g.Status != StatusDone || !slices.Equal(got, names) {
		e.t.Fatalf("group %s: %s with %v (%s), want done with %v", g.Name, g.Status, got, g.Error, names)
	}
	return g
}

// TestScansWithoutEvents: with file system notifications off, the scan
// every poll interval still finds a new file.
func TestScansWithoutEvents(t *testing.T) {
	e := newEnv(t)
	e.startServer(servertest.Options{})
	d := e.startDetecting(hooks{noNotify: true})
	e.logWhen("no file system notifications; relying on scans", nil)
	writeFile(t, filepath.Join(e.dir, "S.7"), content("S", 300))
	g := e.oneDoneGroup(d, "S.7")
	e.checkResults(g, map[string][]byte{"S.7": content("S", 300)})
}

// TestEventsWithoutScans: with a poll interval of an hour, a new file is
// found through its notifications, long before the next scan. (The bound
// is the test's deadline, far below the hour; nothing here is timed.)
func TestEventsWithoutScans(t *testing.T) {
	e := newEnv(t)
	e.startServer(servertest.Options{})
	e.mod = func(c *Config) { c.PollInterval = time.Hour }
	d := e.startDetecting(hooks{})
	writeFile(t, filepath.Join(e.dir, "N.7"), content("N", 300))
	g := e.oneDoneGroup(d, "N.7")
	e.checkResults(g, map[string][]byte{"N.7": content("N", 300)})
	if recs := e.logRecords("no file system notifications; relying on scans"); len(recs) != 0 {
		t.Errorf("notifications were off: %v", recs)
	}
}

// TestMtimeChangeWaits: a file whose modification time changes without a
// change of size waits the whole stability delay again, and is grouped
// with its new mtime.
func TestMtimeChangeWaits(t *testing.T) {
	const delay = 2 * time.Second
	e := newEnv(t)
	e.startServer(servertest.Options{})
	e.mod = func(c *Config) { c.StabilityDelay, c.GroupingTimeout = delay, delay }
	d := e.start(hooks{})
	p := filepath.Join(e.dir, "M.7")
	data := content("M", 5000)
	writeFile(t, p, data)
	e.logWhen("file found", forFile(p)) // seen with its first mtime
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	m2 := info.ModTime().Add(time.Second)
	changed := time.Now() // before the change: the daemon cannot see it earlier
	if err := os.Chtimes(p, m2, m2); err != nil {
		t.Fatal(err)
	}
	g := e.oneDoneGroup(d, "M.7")
	if f := g.Files[0]; !f.ModTime.Equal(m2) || f.Size != int64(len(data)) || f.SHA256 != sha(data) {
		t.Errorf("grouped file %+v, want mtime %s", f, m2)
	}
	if ready := e.completeAt(p); ready.Sub(changed) < delay {
		t.Errorf("file judged complete %s after its mtime changed, want at least the stability delay (%s)", ready.Sub(changed), delay)
	}
	e.checkResults(g, map[string][]byte{"M.7": data})
}

// TestGroupingChain: files that each arrive within the grouping timeout of
// the previous one form one group, however long the chain is in all; a
// backlog whose mtimes form such a chain is one group as well.
func TestGroupingChain(t *testing.T) {
	t.Run("live", func(t *testing.T) {
		t.Parallel()
		const stability, timeout, n = 300 * time.Millisecond, 2 * time.Second, 9
		e := newEnv(t)
		e.startServer(servertest.Options{})
		e.mod = func(c *Config) { c.StabilityDelay, c.GroupingTimeout = stability, timeout }
		d := e.start(hooks{})
		var names []string
		inputs := map[string][]byte{}
		for i := 0; i < n; i++ {
			name := "L" + itoa(i) + ".7"
			p := filepath.Join(e.dir, name)
			names, inputs[name] = append(names, name), content(name, 100+i)
			writeFile(t, p, inputs[name])
			// The next file comes once this one has joined the group:
			// a stability delay later, well within the timeout.
			e.logWhen("file complete", forFile(p))
		}
		first, last := e.completeAt(filepath.Join(e.dir, names[0])), e.completeAt(filepath.Join(e.dir, names[n-1]))
		if span := last.Sub(first); span <= timeout {
			t.Fatalf("the files joined over %s, not more than the grouping timeout %s", span, timeout)
		}
		g := e.oneDoneGroup(d, names...)
		e.checkResults(g, inputs)
	})
	t.Run("backlog", func(t *testing.T) {
		t.Parallel()
		const timeout = time.Second
		e := newEnv(t)
		e.startServer(servertest.Options{})
		e.mod = func(c *Config) { c.GroupingTimeout = timeout }
		base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
		mtimes := map[string]time.Time{"F.7": base.Add(time.Hour)} // far from the chain
		for i := 0; i < 5; i++ {
			mtimes["B"+itoa(i)+".7"] = base.Add(time.Duration(i) * 800 * time.Millisecond)
		}
		for name, m := range mtimes {
			p := filepath.Join(e.dir, name)
			writeFile(t, p, content(name, 100))
			if err := os.Chtimes(p, m, m); err != nil {
				t.Fatal(err)
			}
		}
		d := e.start(hooks{})
		gs := e.groupsWhen(d, "backlog groups done", allFinished(2))
		var got [][]string
		for _, g := range gs {
			if g.Status != StatusDone {
				t.Errorf("group %s %s: %s", g.Name, g.Status, g.Error)
			}
			names := fileNames(g)
			slices.Sort(names)
			got = append(got, names)
		}
		want := [][]string{{"B0.7", "B1.7", "B2.7", "B3.7", "B4.7"}, {"F.7"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("groups (-want +got):\n%s", diff)
		}
	})
}

// TestUnopenableFileWaits: a file that is stable but cannot be opened for
// reading is not complete: it is tried again, does not hold up other
// files, and goes through once it can be opened. (Tests run as root, for
// whom permissions do not stop a read, so the open is replaced.)
func TestUnopenableFileWaits(t *testing.T) {
	e := newEnv(t)
	e.startServer(servertest.Options{})
	var allow atomic.Bool
	var refused atomic.Int32
	h := hooks{openFile: func(path string) (*os.File, error) {
		if filepath.Base(path) == "U.7" && !allow.Load() {
			refused.Add(1)
			return nil, &fs.PathError{Op: "open", Path: path, Err: syscall.EACCES}
		}
		return openNoBlock(path)
	}}
	d := e.start(h)
	u := filepath.Join(e.dir, "U.7")
	writeFile(t, u, content("U", 400))
	writeFile(t, filepath.Join(e.dir, "R.7"), content("R", 400))
	// R.7 goes through on its own while U.7 is refused again and again.
	e.groupsWhen(d, "R.7 done", allFinished(1))
	servertest.Eventually(t, time.Until(deadline(e.ctx)), "U.7 tried three times", func() bool { return refused.Load() >= 3 })
	e.logWhen("complete file cannot be opened yet", forFile(u))
	if gs, err := d.Groups(e.ctx); err != nil || len(gs) != 1 || !slices.Equal(fileNames(gs[0]), []string{"R.7"}) {
		t.Fatalf("groups %+v (%v), want only R.7 while U.7 cannot be opened", gs, err)
	}
	allow.Store(true)
	gs := e.groupsWhen(d, "U.7 done", allFinished(2))
	if g := gs[1]; g.Status != StatusDone || !slices.Equal(fileNames(g), []string{"U.7"}) {
		t.Fatalf("second group %+v, want U.7 done", g)
	}
	e.checkResults(gs[1], map[string][]byte{"U.7": content("U", 400)})
}
