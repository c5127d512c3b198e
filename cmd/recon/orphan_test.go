package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/reap"
	"github.com/recon-mri/recon/internal/servertest"
)

// orphanChild is started three ways by the first attempt of a job: as a
// plain background child, with setsid, and orphaned by a double fork. It
// records its pid, waits until the job runs again (DIR/release), and then
// writes stale output into its attempt's output directory, as a
// reconstruction tool left running by a crashed server would. The wait is
// bounded, so that nothing outlives a failed test for long.
const orphanChild = `#!/bin/sh
name=$1 out=$2 d=$3
echo $$ > "$d/pid-$name.tmp" && mv "$d/pid-$name.tmp" "$d/pid-$name"
i=0
while [ ! -e "$d/release" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
echo "STALE output of attempt 1 ($name)" > "$out/manifest.txt"
echo x > "$out/extra-from-attempt1-$name.txt"
echo done > "$d/done-$name"
`

// TestOrphansOfACrashedAttempt kills a real server with SIGKILL while the
// script's children (a plain background child, one that left with setsid,
// one orphaned by a double fork) run; their script dies with the server,
// they do not. After the restart the job runs again, and its results hold
// only what the second attempt wrote: the children of the first were
// killed before it started (and logged), so none is left and none wrote
// into the new attempt's output. Where runs get a cgroup, a fourth child
// that also dropped the marker (env -i) is found there.
func TestOrphansOfACrashedAttempt(t *testing.T) {
	if !reap.Supported {
		t.Skip("no /proc: processes cannot be found by their marker")
	}
	dir := t.TempDir()
	servertest.WriteScript(t, dir, "child.sh", orphanChild)
	// The second attempt writes its manifest, lets any child of the first
	// that is still alive go, and waits until each has written or is gone.
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
d="`+dir+`"
n=1
if [ -e "$d/ran-$RECON_JOB_ID" ]; then n=2; fi
echo $n >> "$d/ran-$RECON_JOB_ID"
if [ $n = 1 ]; then
  "$d/child.sh" plain "$3" "$d" &
  setsid "$d/child.sh" setsid "$3" "$d" &
  sh -c '"$1/child.sh" orphan "$2" "$1" &' sh "$d" "$3"
  if [ -e "$d/cgroups" ]; then
    env -i PATH=/usr/bin:/bin setsid /bin/sh "$d/child.sh" nomarker "$3" "$d" &
  fi
  while :; do sleep 0.05; done
fi
echo "attempt 2 of $RECON_JOB_ID" > "$3/manifest.txt"
touch "$d/release"
alive() { s=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | cut -c2); [ -n "$s" ] && [ "$s" != Z ]; }
for c in $(cat "$d/children"); do
  p=$(cat "$d/pid-$c"); i=0
  while alive "$p" && [ ! -e "$d/done-$c" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
done
`)
	children := []string{"plain", "setsid", "orphan"}
	// Where runs get a cgroup (root, cgroup2), a fourth child drops the
	// marker too (env -i): the cgroup still holds it.
	if g, err := reap.NewGroup("probe-" + rand.Text()); err == nil {
		g.Kill(t.Context())
		children = append(children, "nomarker")
		writeFile(t, filepath.Join(dir, "cgroups"), "", 0o600)
	} else if os.Getenv("RECON_TEST_STRICT") != "" || os.Getenv("CI") != "" {
		t.Fatalf("strict mode (RECON_TEST_STRICT): no writable cgroup2 hierarchy (needs root): %v", err)
	} else {
		t.Logf("no cgroups (%v): the marker alone finds the children", err)
	}
	writeFile(t, filepath.Join(dir, "children"), strings.Join(children, " ")+"\n", 0o600)
	key := serverOpts(t, dir, script, "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	id := submitFile(t, dir, "client.opts", "scan.7", "raw")

	pids := map[string]int{}
	servertest.Eventually(t, 30*time.Second, "the first attempt's children run", func() bool {
		for _, c := range children {
			b, err := os.ReadFile(filepath.Join(dir, "pid-"+c))
			pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || perr != nil {
				return false
			}
			pids[c] = pid
		}
		return true
	})
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	srv.kill9(t)
	for c, pid := range pids {
		if processGone(pid) {
			t.Fatalf("the %s child (%d) died with the server: the test proves nothing", c, pid)
		}
	}

	srv2 := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv2.clientAddr, key)
	out := filepath.Join(dir, "fetched")
	r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", out, id)
	if r.code != 0 {
		t.Fatalf("fetch after the restart: exit %d\n%s", r.code, r.stderr)
	}
	var got []string
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(out, p)
			got = append(got, rel)
		}
		return nil
	})
	if !slices.Equal(got, []string{"manifest.txt"}) {
		t.Errorf("results of the re-run = %v, want only its own manifest.txt", got)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "manifest.txt")); string(b) != "attempt 2 of "+id+"\n" {
		t.Errorf("manifest.txt = %q, want the re-run's own", b)
	}
	if st := jobState(t, dir, "client.opts", id); st != "succeeded" {
		t.Errorf("job %s, want succeeded", st)
	}

	// None of the first attempt's processes is left, by pid or by marker.
	for c, pid := range pids {
		if !processGone(pid) {
			t.Errorf("the %s child of the first attempt (%d) still runs", c, pid)
		}
	}
	left, err := reap.Find(reap.Prefix(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if strings.Contains(p.Marker, "."+id+".") {
			t.Errorf("process %d (%s) of job %s is left: marker %s", p.PID, p.Command, id, p.Marker)
		}
	}
	// Each was killed at the restart, and the log says which.
	recs := servertest.LogRecords(t, filepath.Join(dir, "recon.log"), "killed a process left by an earlier run of the job")
	for c, pid := range pids {
		found := slices.ContainsFunc(recs, func(r map[string]any) bool {
			return r["job_id"] == id && r["pid"] == float64(pid) && r["attempt"] == "1" &&
				strings.Contains(fmt.Sprint(r["command"]), "child.sh "+c)
		})
		if !found {
			t.Errorf("no log record of killing the %s child (%d); records: %v", c, pid, recs)
		}
	}
	// No attempt directory is left.
	es, _ := os.ReadDir(filepath.Join(dir, "data", "outputs"))
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".attempt-") {
			t.Errorf("attempt directory %s left", e.Name())
		}
	}
}
