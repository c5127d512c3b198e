package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/recon-mri/recon/internal/jobs"
)

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends. It
// needs root: without it the test is skipped, or fails in strict mode
// (RECON_TEST_STRICT or CI set, as `make test` does).
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("RECON_TEST_STRICT") != "" || os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("mounting a small tmpfs needs root")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		skip("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// fill writes zeros into path until its file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for buf := make([]byte, 1<<20); err == nil; {
		_, err = f.Write(buf)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill the disk: %v", err)
	}
}

// TestStoreOnFullDisk: on a disk that something else has filled, the
// store still records a job's end (it releases its reserve file); a
// second store opened on the same full disk, as after a crash of the
// first, recovers its running jobs; and once the disk has room again, the
// reserve is created again.
func TestStoreOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	mountTmpfs(t, dir, 32<<20)
	path := filepath.Join(dir, "state", "jobs.db")
	a := openStore(t, path)
	if !a.Reserved() {
		t.Fatalf("a new store on an empty disk holds no reserve")
	}
	for range 3 {
		mustCreate(t, a, &jobs.Job{})
	}
	j1, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j2, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}

	junk := filepath.Join(dir, "junk")
	fill(t, junk)
	if err := a.Finish(ctx, j1.ID, jobs.Failed, nil, "the disk is full", nil); err != nil {
		t.Fatalf("Finish on a full disk: %v", err)
	}
	if a.Reserved() {
		t.Errorf("after a write on a full disk, the store still holds its reserve")
	}
	if got, err := a.Get(ctx, j1.ID); err != nil || got.State != jobs.Failed {
		t.Fatalf("job finished on a full disk: %+v, %v", got, err)
	}

	// Space returns: the next write restores the reserve.
	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, a, &jobs.Job{})
	if !a.Reserved() {
		t.Fatalf("with room on the disk again, a write did not restore the reserve")
	}

	// The disk fills again; a is left open, as by a server killed with
	// SIGKILL, and a new store opens on the full disk.
	fill(t, junk)
	b, err := jobs.Open(path)
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	defer b.Close()
	requeued, failed, err := b.Recover(ctx, 3)
	if err != nil {
		t.Fatalf("Recover on a full disk: %v", err)
	}
	if len(requeued) != 1 || requeued[0] != j2.ID || len(failed) != 0 {
		t.Errorf("Recover on a full disk = %v, %v; want [%s] requeued", requeued, failed, j2.ID)
	}

	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	if err := b.RestoreReserve(); err != nil {
		t.Fatal(err)
	}
	if !b.Reserved() {
		t.Fatalf("with room on the disk again, RestoreReserve did not restore the reserve")
	}
	if fi, err := os.Stat(path + jobs.ReserveSuffix); err != nil || fi.Size() < jobs.ReserveBytes {
		t.Errorf("reserve file: %v, %v; want %d bytes", fi, err, jobs.ReserveBytes)
	}
}
