package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// diskScript is a reconstruction script whose behaviour follows the name
// of its first input: fill* writes zeros into the output until the disk
// is full, limit* writes 1 MiB and then sleeps for ten minutes, hold*
// sleeps until it is stopped, anything else is copied to <name>.out.
const diskScript = `#!/bin/sh
set -eu
for f in "$1"/*; do
  n=$(basename "$f")
  case "$n" in
  fill*) cat /dev/zero > "$3/big" ;;
  limit*) head -c 1048576 /dev/zero > "$3/part"; sleep 600 ;;
  hold*) sleep 600 ;;
  *) cp "$f" "$3/$n.out" ;;
  esac
done
`

// fullDiskServer starts a server whose inputs, outputs and state are all
// on one tmpfs of size bytes (its mount point is returned), keeping
// MIN_FREE_DISK_MB = 4 free.
func fullDiskServer(t *testing.T, size int64, extra map[string]string) (*servertest.Server, servertest.Options, string) {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, disk, size)
	opts := servertest.Options{Dir: dir, Script: diskScript, Extra: map[string]string{
		"RECON_SERVER_BASE_PFILE_DIR": "disk/inputs",
		"RECON_JOB_OUTPUT_BASE_DIR":   "disk/outputs",
		"RECON_SERVER_STATE_DIR":      "disk/state",
		"MIN_FREE_DISK_MB":            "4",
		"KILL_GRACE_SECONDS":          "1",
	}}
	for k, v := range extra {
		opts.Extra[k] = v
	}
	return servertest.Start(t, opts), opts, disk
}

// fillDisk writes zeros into path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return
		}
	}
}

func diskFree(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// checkJobRuns submits a small job, waits for it to succeed and fetches
// its result.
func checkJobRuns(t *testing.T, c *client.Client, what string) {
	t.Helper()
	ctx := testContext(t)
	data := []byte("a small scan, " + what)
	j := submitOne(t, ctx, c, "scan.7", data)
	if j = waitDone(t, ctx, c, j.JobID); j.State != "succeeded" {
		t.Fatalf("%s: a small job ended %s (%s)", what, j.State, j.Error)
	}
	_, files, err := c.Fetch(ctx, j.JobID, t.TempDir(), nil)
	if err != nil || len(files) != 1 {
		t.Fatalf("%s: fetch = %d files, %v", what, len(files), err)
	}
	if b, err := os.ReadFile(files[0].Path); err != nil || !bytes.Equal(b, data) {
		t.Errorf("%s: result %q, %v; want %q", what, b, err, data)
	}
}

// TestJobFillsDisk runs a script that writes far more than the disk holds
// on a server whose inputs, outputs and job store share one 48 MiB tmpfs:
// the job ends failed with an error naming the full disk, its partial
// output is removed, and the server keeps serving — status, a next job
// with its fetch, and an admin cancel of a running job — and restarts on
// that disk.
func TestJobFillsDisk(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s, opts, disk := fullDiskServer(t, 48<<20, nil)
	c := s.Dial(t)

	j := submitOne(t, ctx, c, "fill.7", []byte("fill the disk"))
	j = waitDone(t, ctx, c, j.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "the disk holding job outputs is full") ||
		!strings.Contains(j.Error, "MIN_FREE_DISK_MB") {
		t.Fatalf("job filling the disk ended %s with error %q; want failed, naming the full disk", j.State, j.Error)
	}
	waitGone(t, filepath.Join(s.Config.OutputBaseDir, j.JobID), "the job's partial output")
	if free := diskFree(t, disk); free < 32<<20 {
		t.Errorf("after the job, %d bytes are free on the disk; want its output's space back", free)
	}
	if _, _, err := c.Fetch(ctx, j.JobID, t.TempDir(), nil); err == nil {
		t.Errorf("fetch of the failed job succeeded")
	}

	checkServes(t, ctx, s)
	checkJobRuns(t, c, "after a job filled the disk")

	hold := submitOne(t, ctx, c, "hold.7", []byte("hold"))
	waitJob(t, ctx, c, hold.JobID, "running", func(j *client.Job) bool { return j.State == "running" })
	var rep protocol.CancelReply
	adminCall(t, ctx, s, protocol.TypeAdminCancel, protocol.JobRef{JobID: hold.JobID}, protocol.TypeAdminCancelReply, &rep)
	if rep.State != "running" && rep.State != "cancelled" {
		t.Fatalf("admin cancel = %+v", rep)
	}
	if j := waitDone(t, ctx, c, hold.JobID); j.State != "cancelled" {
		t.Fatalf("cancelled job ended %s (%s)", j.State, j.Error)
	}

	c.Close()
	s.Stop(t)
	s = servertest.Start(t, opts)
	checkJobRuns(t, s.Dial(t), "after a restart")
	if recs := servertest.LogRecords(t, s.LogPath, "record job end"); len(recs) > 0 {
		t.Errorf("the server could not record a job's end: %v", recs)
	}
}

// TestRestartOnFullDisk fills the disk holding a server's job store with
// a file while a job runs, stops the server, and starts it again on the
// full disk: it starts, re-queues the job, answers, refuses uploads with
// no_space, and an admin cancels the job; once there is room again, jobs
// run.
func TestRestartOnFullDisk(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s, opts, disk := fullDiskServer(t, 32<<20, map[string]string{"MAX_CONCURRENT_JOBS": "1"})
	c := s.Dial(t)
	checkJobRuns(t, c, "before the disk fills")
	hold := submitOne(t, ctx, c, "hold.7", []byte("hold"))
	waitJob(t, ctx, c, hold.JobID, "running", func(j *client.Job) bool { return j.State == "running" })

	junk := filepath.Join(disk, "junk")
	fillDisk(t, junk)
	c.Close()
	s.Stop(t)

	s = servertest.Start(t, opts)
	c = s.Dial(t)
	checkServes(t, ctx, s)
	if j, err := c.Job(ctx, hold.JobID); err != nil || j.Terminal() {
		t.Fatalf("the job running at the stop, after a restart on a full disk: %+v, %v", j, err)
	}
	p := writeInput(t, t.TempDir(), "scan.7", []byte("no room"))
	if _, err := c.Submit(ctx, []string{p}, nil); !client.IsCode(err, protocol.CodeNoSpace) {
		t.Errorf("submit on a full disk: %v, want no_space", err)
	}

	var rep protocol.CancelReply
	adminCall(t, ctx, s, protocol.TypeAdminCancel, protocol.JobRef{JobID: hold.JobID}, protocol.TypeAdminCancelReply, &rep)
	if j := waitDone(t, ctx, c, hold.JobID); j.State != "cancelled" {
		t.Fatalf("job cancelled on a full disk ended %s (%s)", j.State, j.Error)
	}

	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	checkJobRuns(t, c, "once the disk has room again")
}

// TestResultLimitWhileRunning: a script that writes more than
// MAX_RESULT_BYTES and then sleeps for ten minutes is stopped while it
// runs, and the job fails with an error naming the limit.
func TestResultLimitWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: diskScript, Extra: map[string]string{
		"MAX_RESULT_BYTES":   "512KiB",
		"KILL_GRACE_SECONDS": "1",
	}})
	c := s.Dial(t)
	j := submitOne(t, ctx, c, "limit.7", []byte("limit"))
	j = waitDone(t, ctx, c, j.JobID)
	want := fmt.Sprintf("the job's output reached MAX_RESULT_BYTES (%d) while the script ran", 512<<10)
	if j.State != "failed" || !strings.Contains(j.Error, want) {
		t.Fatalf("job ended %s with error %q; want failed with %q", j.State, j.Error, want)
	}
	waitGone(t, filepath.Join(s.Config.OutputBaseDir, j.JobID), "the job's partial output")
	checkJobRuns(t, c, "after a job over MAX_RESULT_BYTES")
}

// TestUploadRefusedOutputDiskFull puts the outputs on a disk of their own
// (a 16 MiB tmpfs) and fills it: an upload, for which the input disk has
// room, is refused with no_space, as its job could write no output; once
// the output disk has room, the same upload is taken and runs.
func TestUploadRefusedOutputDiskFull(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "outdisk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, disk, 16<<20)
	s := servertest.Start(t, servertest.Options{Dir: dir, Extra: map[string]string{
		"RECON_JOB_OUTPUT_BASE_DIR": "outdisk/outputs",
		"MIN_FREE_DISK_MB":          "4",
	}})
	c := s.Dial(t)
	junk := filepath.Join(disk, "junk")
	fillDisk(t, junk)
	p := writeInput(t, t.TempDir(), "scan.7", []byte("a scan"))
	if _, err := c.Submit(ctx, []string{p}, nil); !client.IsCode(err, protocol.CodeNoSpace) {
		t.Fatalf("submit with the output disk full: %v, want no_space", err)
	}
	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	checkJobRuns(t, c, "once the output disk has room")
}
