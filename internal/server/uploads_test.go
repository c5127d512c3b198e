package server_test

// Uploads a peer gets wrong or stretches (docs/SECURITY.md, sections 2 and
// 4): slow, vanished, oversized, empty, huge in number, longer than the
// file list allows, larger than the free space; each against a real server
// on loopback.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestSlowUpload sends an announced file a byte every 20 ms, far below
// server.MinTransferRate: the upload fails with code timeout once the
// grace (the idle timeout) is spent, although no single wait reaches the
// idle timeout, and nothing is kept.
func TestSlowUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{IdleTimeout: time.Second}})
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "slow.7", Size: 100_000})
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := rc.Write([]byte{'x'}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	code := wireError(t, rc)
	close(stop)
	wg.Wait()
	if code != protocol.CodeTimeout {
		t.Errorf("slow upload ended with code %s, want timeout", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("slow upload cut after %v", d)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
	checkServes(t, ctx, s)
}

// TestVanishedUploader sends part of a file and then nothing, without
// closing (a peer that vanished, or a half-open connection): the upload
// fails with code timeout and nothing is kept.
func TestVanishedUploader(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{IdleTimeout: time.Second}})
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "big.7", Size: 1 << 20})
	if _, err := rc.Write(randomBytes(t, 1000)); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc); code != protocol.CodeTimeout {
		t.Errorf("vanished uploader: code %s, want timeout", code)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
}

// TestMoreBytesThanAnnounced sends more bytes than the file's announced
// size: the surplus is read as the next control message, which is
// refused, and nothing is kept.
func TestMoreBytesThanAnnounced(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	rc := rawClient(t, ctx, s)
	data := []byte("0123456789")
	startUpload(t, rc, protocol.FileInfo{Name: "a.7", Size: 5})
	if _, err := rc.Write(data); err != nil {
		t.Fatal(err)
	}
	protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sha256Hex(data)})
	if code := wireError(t, rc); code != protocol.CodeTooLarge && code != protocol.CodeBadRequest {
		t.Errorf("surplus bytes: code %s, want too_large or bad_request", code)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
}

// TestEmptyFiles submits empty files beside a normal one: they are stored,
// passed to the script and returned like any other.
func TestEmptyFiles(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	c := s.Dial(t)
	dir := t.TempDir()
	paths := []string{
		writeInput(t, dir, "empty1.7", nil),
		writeInput(t, dir, "data.7", []byte("data")),
		writeInput(t, dir, "empty2.7", nil),
	}
	j, err := c.Submit(ctx, paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range j.Files {
		if strings.HasPrefix(f.Name, "empty") && (f.Size != 0 || !sameContent(f.SHA256, f.BLAKE3, nil)) {
			t.Errorf("empty file stored as %+v", f)
		}
	}
	if j := waitDone(t, ctx, c, j.JobID); j.State != "succeeded" || len(j.Results) != 3 {
		t.Fatalf("job ended %s with results %+v", j.State, j.Results)
	}
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, j.JobID, dst, nil)
	if err != nil || len(files) != 3 {
		t.Fatalf("fetch: %+v, %v", files, err)
	}
	for _, name := range []string{"empty1.7.out", "empty2.7.out"} {
		if fi, err := os.Stat(filepath.Join(dst, name)); err != nil || fi.Size() != 0 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
}

// TestTenThousandFiles submits one job of 10,000 small files (with
// MAX_FILES_PER_JOB raised): it is stored, run with every file, and its
// description - in the submit answer, job status, events, queue and result
// manifest - still fits in one message.
func TestTenThousandFiles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := memDir(t)
	const n = 10_000
	s := servertest.Start(t, servertest.Options{
		Dir: dir,
		// The script lists its inputs and hashes them together, in one
		// process: a copy per file would take longer than the upload.
		Script: "#!/bin/sh\nset -eu\ncd \"$1\"\nls | wc -l > \"$3/count\"\ncat * | sha256sum | cut -c1-64 > \"$3/sum\"\n",
		Extra:  map[string]string{"MAX_FILES_PER_JOB": fmt.Sprint(n)},
	})
	c := s.Dial(t)
	in := filepath.Join(dir, "client")
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	paths := make([]string, n)
	all := sha256.New()
	for i := range n {
		name := fmt.Sprintf("f%05d.7", i)
		all.Write([]byte(name))
		paths[i] = writeInput(t, in, name, []byte(name))
	}
	start := time.Now()
	job, err := c.Submit(ctx, paths, nil)
	if err != nil {
		t.Fatalf("submit %d files: %v", n, err)
	}
	t.Logf("%d files uploaded in %v", n, time.Since(start).Round(time.Millisecond))
	if len(job.Files) != n {
		t.Fatalf("job lists %d files, want %d", len(job.Files), n)
	}
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	if j, err := c.Job(ctx, job.JobID); err != nil || len(j.Files) != n {
		t.Fatalf("job status: %v", err)
	}
	if q, err := c.Queue(ctx); err != nil || len(q) != 1 {
		t.Fatalf("queue: %d jobs, %v", len(q), err)
	}
	dst := filepath.Join(dir, "results")
	if _, _, err := c.Fetch(ctx, job.JobID, dst, nil); err != nil {
		t.Fatal(err)
	}
	count, _ := os.ReadFile(filepath.Join(dst, "count"))
	sum, _ := os.ReadFile(filepath.Join(dst, "sum"))
	if strings.TrimSpace(string(count)) != fmt.Sprint(n) || strings.TrimSpace(string(sum)) != hex.EncodeToString(all.Sum(nil)) {
		t.Errorf("the script saw %q files with hash %q", count, sum)
	}
	waitGone(t, filepath.Join(s.Config.InputBaseDir, job.JobID), "the input dir")
}

// TestFileListTooLong announces 20,000 files with long names, within
// MAX_FILES_PER_JOB, whose list, with the hashes the server adds, would
// not fit in one message: refused with code too_large before anything is
// stored.
func TestFileListTooLong(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"MAX_FILES_PER_JOB": "100000"}})
	fs := make([]protocol.FileInfo, 20_000)
	for i := range fs {
		fs[i] = protocol.FileInfo{Name: fmt.Sprintf("%0200d.7", i), Size: 1}
	}
	refuseSubmission(t, ctx, s, protocol.Submit{Files: fs}, protocol.CodeTooLarge)
}

// TestUploadBeyondFreeSpace puts the inputs on a small tmpfs: a file
// larger than its free space is refused with code no_space before a byte
// is stored; a file that fits when announced but not when sent (the disk
// filled meanwhile) fails with code no_space too; nothing is left behind,
// and the server takes the upload once there is room.
func TestUploadBeyondFreeSpace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s, disk := smallDiskServer(t)
	refuseSubmission(t, ctx, s, protocol.Submit{Files: []protocol.FileInfo{{Name: "huge.7", Size: 16 << 20}}}, protocol.CodeNoSpace)

	data := randomBytes(t, 4<<20)
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "big.7", Size: int64(len(data))})
	// Something else fills the disk.
	junk := filepath.Join(disk, "junk")
	if err := os.WriteFile(junk, make([]byte, 6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		rc.Write(data)
		protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sha256Hex(data)})
	}()
	if code := wireError(t, rc); code != protocol.CodeNoSpace {
		t.Errorf("disk full during the upload: code %s, want no_space", code)
	}
	rc.Close()
	checkNothingStored(t, ctx, s)

	os.Remove(junk)
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "big.7", data)
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}

// TestUploadsEndHoldingNothing: every way an upload ends gives back the
// disk space reserved for it, and leaves only what it should: a broken
// upload with a submission id is kept for resuming, a broken one without
// is removed, a committed one is the job's input.
func TestUploadsEndHoldingNothing(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "kept", 200_000, true)

	plain := rawClient(t, ctx, s)
	if ready, err := announce(t, plain, r.submit("")); err != nil || ready.Resume != nil {
		t.Fatalf("announcement without a submission id: %+v, %v", ready, err)
	}
	sendRaw(t, plain, r.data[0], sha256Hex(r.data[0]))
	sendRaw(t, plain, r.data[1][:100_000], "")
	plain.Close()

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("done"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}

	var sp protocol.SpaceUse
	servertest.Eventually(t, pollTimeout, "no upload in progress, one kept", func() bool {
		sp = adminSpace(t, ctx, s)
		return sp.Uploads == 0 && len(incoming(t, s)) == 1
	})
	if sp.ReservedBytes != 0 || sp.ReceivedBytes != 0 || sp.KeptUploads != 1 || sp.KeptUploadBytes != 210_000 {
		t.Errorf("space after the uploads ended: %+v; want nothing reserved, one upload of 210000 bytes kept", sp)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}
