package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// mountSmallDisk mounts a tmpfs of size bytes on dir until the test ends.
// It needs root: without it the test is skipped, or fails in strict mode.
func mountSmallDisk(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		servertest.SkipUnlessStrict(t, "skipped: mounting a small tmpfs needs root")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		servertest.SkipUnlessStrict(t, "skipped: cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TestKill9OnFullDisk: the server's inputs, outputs and job store share a
// 32 MiB disk; while a job runs, something else fills the disk, and the
// server is killed with SIGKILL. `recon server` starts again on the full
// disk (it used to fail with "recover jobs: commit: database or disk is
// full"), answers, and once there is room the job runs to its end and its
// result is fetched.
func TestKill9OnFullDisk(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountSmallDisk(t, disk, 32<<20)
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
echo start >> "`+dir+`/starts-$RECON_JOB_ID"
while [ ! -e "`+dir+`/release" ]; do sleep 0.05; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
	key := serverOpts(t, dir, script,
		"RECON_SERVER_BASE_PFILE_DIR = disk/inputs",
		"RECON_JOB_OUTPUT_BASE_DIR = disk/outputs",
		"RECON_SERVER_STATE_DIR = disk/state",
		"MIN_FREE_DISK_MB = 4",
		"MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	scan := filepath.Join(dir, "scan.7")
	writeFile(t, scan, "a scan", 0o644)
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", scan)
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	servertest.Eventually(t, 20*time.Second, "the job runs", func() bool {
		_, err := os.Stat(filepath.Join(dir, "starts-"+id))
		return err == nil
	})

	junk := filepath.Join(disk, "junk")
	f, err := os.Create(junk)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 1<<20); err == nil; {
		_, err = f.Write(buf)
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill the disk: %v", err)
	}
	srv.kill9(t)

	srv = startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	if st.code != 0 || !strings.Contains(st.stdout, `"state": "running"`) && !strings.Contains(st.stdout, `"state": "queued"`) {
		t.Fatalf("status after a restart on a full disk: exit %d\n%s%s", st.code, st.stdout, st.stderr)
	}

	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "release"), "", 0o644)
	out := filepath.Join(dir, "out")
	if r := runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", out, id); r.code != 0 {
		t.Fatalf("fetch after the restart: exit %d\n%s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(out, "scan.7.out")); err != nil || string(b) != "a scan" {
		t.Errorf("result %q, %v; want %q", b, err, "a scan")
	}
}
