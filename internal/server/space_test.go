package server_test

// Disk held hostage (docs/SECURITY.md, section 9): a slow client's
// reservation, broken uploads kept for resuming and failed jobs' outputs
// must not take the space other clients need.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// spaceDiskMiB is the size of the tmpfs the tests of this file put the
// server's inputs (and outputs, where they say so) on.
const spaceDiskMiB = 32

// spaceServer starts a server whose inputs, and with outputsToo its
// outputs, are on a 32 MiB tmpfs, without a free-space reserve.
func spaceServer(t *testing.T, opts servertest.Options, outputsToo bool) *servertest.Server {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, disk, spaceDiskMiB<<20)
	// The caps are per client identity: each test address has its own.
	var ids strings.Builder
	for i := 1; i <= 9; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		fmt.Fprintf(&ids, "%s = %s\n", ip, addrKey(ip).Encode())
	}
	if err := os.WriteFile(filepath.Join(dir, "clients.keys"), []byte(ids.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := map[string]string{
		"RECON_SERVER_BASE_PFILE_DIR": "disk/inputs",
		"MIN_FREE_DISK_MB":            "0",
		"CLIENT_KEYS_FILE":            "clients.keys",
	}
	if outputsToo {
		extra["RECON_JOB_OUTPUT_BASE_DIR"] = "disk/outputs"
	}
	for k, v := range opts.Extra {
		extra[k] = v
	}
	opts.Dir, opts.Extra = dir, extra
	return servertest.Start(t, opts)
}

// addrKey is the key of the identity named after a test address.
func addrKey(ip string) keys.Key {
	sum := sha256.Sum256([]byte("space test identity " + ip))
	k, err := keys.Parse(base64.StdEncoding.EncodeToString(sum[:]))
	if err != nil {
		panic(err)
	}
	return k
}

// clientFrom opens a client session from localIP, as the client identity
// of that name (the caps are per identity); it is closed when the
// test ends.
func clientFrom(t *testing.T, ctx context.Context, s *servertest.Server, localIP string) *secure.Conn {
	t.Helper()
	rc, err := rawDial(ctx, s.Addr().String(), localIP, addrKey(localIP), secure.RoleClient)
	if err != nil {
		t.Fatalf("dial from %s: %v", localIP, err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// dialAsAddr connects the Go client as the identity named after ip.
func dialAsAddr(t *testing.T, ctx context.Context, s *servertest.Server, ip string) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Config{Address: s.Addr().String(), Key: addrKey(ip).Encode()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// uploadFrom submits data as one file from localIP and returns the
// server's answer to the announcement, then to the upload.
func uploadFrom(t *testing.T, ctx context.Context, s *servertest.Server, localIP, name string, data []byte) (*protocol.JobInfo, error) {
	t.Helper()
	rc := clientFrom(t, ctx, s, localIP)
	if _, err := announce(t, rc, protocol.Submit{Files: []protocol.FileInfo{{Name: name, Size: int64(len(data))}}}); err != nil {
		return nil, err
	}
	sendRaw(t, rc, data, sha256Hex(data))
	m, err := protocol.ReadMessage(rc)
	if err != nil {
		t.Fatal(err)
	}
	var job protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// breakFrom starts an upload of size bytes with submission id sid from
// localIP, sends the first sent bytes, breaks the connection and waits
// until the server has kept it for resuming.
func breakFrom(t *testing.T, ctx context.Context, s *servertest.Server, localIP, sid string, size, sent int) {
	t.Helper()
	const kept = "upload broken; kept for resuming"
	before := len(servertest.LogRecords(t, s.LogPath, kept))
	rc := clientFrom(t, ctx, s, localIP)
	ready, err := announce(t, rc, protocol.Submit{SubmissionID: sid, Files: []protocol.FileInfo{{Name: "raw.7", Size: int64(size)}}})
	if err != nil || ready.Resume != nil {
		t.Fatalf("upload %s from %s: %+v, %v", sid, localIP, ready, err)
	}
	sendRaw(t, rc, make([]byte, sent), "")
	rc.Close()
	servertest.Eventually(t, pollTimeout, "upload "+sid+" is kept for resuming", func() bool {
		return len(servertest.LogRecords(t, s.LogPath, kept)) > before
	})
}

// adminSpace returns how the server says its space is held.
func adminSpace(t *testing.T, ctx context.Context, s *servertest.Server) protocol.SpaceUse {
	t.Helper()
	ac, err := rawDial(ctx, s.AdminAddr().String(), "", mustKey(t, s.AdminKey), secure.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	m, err := request(ac, protocol.TypeAdminStatus, protocol.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	var st protocol.AdminStatus
	if err := m.Decode(protocol.TypeAdminStatusReply, &st); err != nil {
		t.Fatal(err)
	}
	return st.Space
}

// TestSlowClientHoldsOnlyItsShare has a client from 127.0.0.1 announce
// 12 MiB on a 32 MiB disk and send it at 16 KiB/s, above the minimum
// rate. Its second upload of 12 MiB at the same time is refused, over the
// 16 MiB one client may hold (half the disk by default), with a message
// that says so; so is an upload larger than that alone. A 10 MiB upload
// from 127.0.0.2 meanwhile goes through: before the cap, the slow client's
// two reservations left it no_space.
func TestSlowClientHoldsOnlyItsShare(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := spaceServer(t, servertest.Options{}, false)

	slow := clientFrom(t, ctx, s, "127.0.0.1")
	startUpload(t, slow, protocol.FileInfo{Name: "slow.7", Size: 12 << 20})
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-tctx.Done():
				return
			}
			if _, err := slow.Write(make([]byte, 4<<10)); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { stop(); slow.Close(); wg.Wait() })

	_, err := announce(t, clientFrom(t, ctx, s, "127.0.0.1"), protocol.Submit{Files: []protocol.FileInfo{{Name: "second.7", Size: 12 << 20}}})
	if !protocol.IsCode(err, protocol.CodeNoSpace) || !strings.Contains(err.Error(), "MAX_RESERVED_BYTES_PER_CLIENT") ||
		!strings.Contains(err.Error(), "already hold") {
		t.Errorf("second upload of the slow client: %v; want no_space over MAX_RESERVED_BYTES_PER_CLIENT", err)
	}
	_, err = announce(t, clientFrom(t, ctx, s, "127.0.0.3"), protocol.Submit{Files: []protocol.FileInfo{{Name: "huge.7", Size: 17 << 20}}})
	if !protocol.IsCode(err, protocol.CodeNoSpace) || !strings.Contains(err.Error(), "MAX_RESERVED_BYTES_PER_CLIENT") {
		t.Errorf("upload over the cap alone: %v; want no_space over MAX_RESERVED_BYTES_PER_CLIENT", err)
	}

	sp := adminSpace(t, ctx, s)
	if sp.Uploads != 1 || sp.ReservedBytes != 12<<20 || sp.MaxReservedBytesPerClient != spaceDiskMiB<<20/2 {
		t.Errorf("admin status space with the slow upload: %+v", sp)
	}

	data := randomBytes(t, 10<<20)
	job, err := uploadFrom(t, ctx, s, "127.0.0.2", "other.7", data)
	if err != nil {
		t.Fatalf("upload from another client while the slow one holds its reservation: %v", err)
	}
	if j := waitDone(t, ctx, dialAsAddr(t, ctx, s, "127.0.0.2"), job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}

// TestKeptUploadsEvictedForSubmission keeps four broken uploads of 6 MiB
// (from four clients, per-client and total caps raised out of the way) on
// a 32 MiB disk, leaving 8 MiB: a 10 MiB submission removes the oldest
// kept upload and goes through, where it failed with no_space. The others
// stay; the client of the removed one, submitting again with its
// submission id, is told its upload starts over.
func TestKeptUploadsEvictedForSubmission(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := spaceServer(t, servertest.Options{Extra: map[string]string{
		"MAX_KEPT_UPLOAD_BYTES_PER_CLIENT": "1GiB",
		"MAX_KEPT_UPLOAD_BYTES":            "1GiB",
	}}, false)
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		breakFrom(t, ctx, s, ip, "kept-"+string(rune('1'+i)), 7<<20, 6<<20)
	}
	if sp := adminSpace(t, ctx, s); sp.KeptUploads != 4 || sp.KeptUploadBytes != 24<<20 {
		t.Errorf("admin status space with four kept uploads: %+v", sp)
	}

	c := dialAsAddr(t, ctx, s, "127.0.0.2") // the identity of kept-1's client
	p := writeInput(t, t.TempDir(), "legit.7", randomBytes(t, 10<<20))
	job, err := c.Submit(ctx, []string{p}, nil)
	if err != nil {
		t.Fatalf("submission with the disk held by kept uploads: %v", err)
	}
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	// The oldest went, the others stay.
	for _, rec := range servertest.LogRecords(t, s.LogPath, "upload broken; kept for resuming") {
		dir := filepath.Join(s.Config.InputBaseDir, ".incoming-"+rec["job_id"].(string))
		if gone := rec["submission_id"] == "kept-1"; exists(dir) == gone {
			t.Errorf("upload %s: on disk %v, want %v", rec["submission_id"], !gone, gone)
		}
	}
	if !logHas(t, s, `"kept_submission_id":"kept-1"`) {
		t.Error("the log does not show kept-1, the oldest, removed to make room")
	}

	// kept-1's client comes back: the note says why everything is sent.
	var notes []string
	p1 := writeInput(t, t.TempDir(), "raw.7", randomBytes(t, 7<<20))
	j1, err := c.Submit(ctx, []string{p1}, &client.SubmitOptions{SubmissionID: "kept-1", OnNote: func(n string) { notes = append(notes, n) }})
	if err != nil {
		t.Fatalf("submission of the removed upload again: %v", err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "was removed") || !strings.Contains(notes[0], "from the start") {
		t.Errorf("notes to the client of the removed upload: %q", notes)
	}
	if j := waitDone(t, ctx, c, j1.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}

// TestKeptUploadsCappedPerClient keeps broken uploads of 5 MiB on a 32
// MiB disk, with the default caps (per client a quarter of it, 8 MiB; in
// all half, 16 MiB): a client's second removes its first; the upload of
// a fourth client, taking all over 16 MiB, removes the oldest left.
func TestKeptUploadsCappedPerClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := spaceServer(t, servertest.Options{}, false)
	breakFrom(t, ctx, s, "127.0.0.2", "a", 6<<20, 5<<20)
	breakFrom(t, ctx, s, "127.0.0.2", "b", 6<<20, 5<<20)
	servertest.Eventually(t, pollTimeout, "the client's first kept upload is removed", func() bool {
		return logHas(t, s, `"submission_id":"a","client":"127.0.0.2"`)
	})
	breakFrom(t, ctx, s, "127.0.0.3", "c", 6<<20, 5<<20)
	breakFrom(t, ctx, s, "127.0.0.4", "d", 6<<20, 5<<20)
	breakFrom(t, ctx, s, "127.0.0.5", "e", 6<<20, 5<<20)
	servertest.Eventually(t, pollTimeout, "the oldest kept upload is removed", func() bool {
		return logHas(t, s, `"submission_id":"b","client":"127.0.0.2"`)
	})
	sp := adminSpace(t, ctx, s)
	if sp.KeptUploads != 3 || sp.KeptUploadBytes != 15<<20 || sp.MaxKeptUploadBytesPerClient != 8<<20 || sp.MaxKeptUploadBytes != 16<<20 {
		t.Errorf("admin status space: %+v; want c, d and e kept", sp)
	}
	if n := len(incoming(t, s)); n != 3 {
		t.Errorf("%d upload dirs on disk, want 3", n)
	}
}

// failScript fails every job; for an input named big*, it first writes
// 14 MiB of output.
const failScript = `#!/bin/sh
for f in "$1"/*; do
  case "$(basename "$f")" in
  big*) head -c 14680064 /dev/zero > "$3/partial.raw" ;;
  ok*) echo ok > "$3/ok.txt"; exit 0 ;;
  esac
done
echo "reconstruction failed" >&2
exit 1
`

// TestFailedJobOutputsRemoved: a failed job's outputs are removed when it
// fails, with or without results, and a fetch says why there is nothing.
func TestFailedJobOutputsRemoved(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: failScript})
	c := s.Dial(t)
	for _, name := range []string{"big.7", "empty.7"} {
		job := submitOne(t, ctx, c, name, []byte("raw"))
		j := waitDone(t, ctx, c, job.JobID)
		if j.State != "failed" || len(j.Results) != 0 {
			t.Fatalf("%s: job ended %s with %d results; want failed, none kept", name, j.State, len(j.Results))
		}
		if out := filepath.Join(s.Config.OutputBaseDir, job.JobID); exists(out) {
			t.Errorf("%s: the failed job's output dir is still there", name)
		}
		_, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil)
		if !client.IsCode(err, client.CodeGone) || !strings.Contains(err.Error(), "KEEP_FAILED_OUTPUTS") {
			t.Errorf("%s: Fetch: %v; want gone, naming KEEP_FAILED_OUTPUTS", name, err)
		}
	}
	if names := dirNames(t, s.Config.OutputBaseDir); len(names) != 0 {
		t.Errorf("outputs dir holds %v", names)
	}
}

// TestKeepFailedOutputs: with KEEP_FAILED_OUTPUTS, a failed job's outputs
// can be fetched, count in admin status, and are the first removed when a
// submission needs the space, before a kept upload.
func TestKeepFailedOutputs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := spaceServer(t, servertest.Options{Script: failScript, Extra: map[string]string{"KEEP_FAILED_OUTPUTS": "true"}}, true)
	c := s.Dial(t)

	first := submitOne(t, ctx, c, "big1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, first.JobID); j.State != "failed" || len(j.Results) != 1 {
		t.Fatalf("job ended %s with %d results; want failed with its output kept", j.State, len(j.Results))
	}
	_, files, err := c.Fetch(ctx, first.JobID, t.TempDir(), nil)
	if err != nil || len(files) != 1 || files[0].Size != 14<<20 {
		t.Fatalf("Fetch of the failed job's output: %+v, %v", files, err)
	}

	second := submitOne(t, ctx, c, "big2.7", []byte("raw"))
	waitDone(t, ctx, c, second.JobID)
	out := filepath.Join(s.Config.OutputBaseDir, second.JobID)
	if !exists(out) {
		t.Fatal("the failed job's output is not kept")
	}
	breakFrom(t, ctx, s, "127.0.0.2", "kept", 5<<20, 4<<20)
	sp := adminSpace(t, ctx, s)
	if sp.FailedOutputs != 1 || sp.FailedOutputBytes != 14<<20 || sp.Results != 1 || sp.KeptUploads != 1 || !sp.KeepFailedOutputs {
		t.Errorf("admin status space: %+v", sp)
	}

	// 32 MiB - 14 - 4 leaves 14 MiB: a 16 MiB submission removes the
	// failed job's output, and leaves the kept upload.
	p := writeInput(t, t.TempDir(), "ok.7", randomBytes(t, 16<<20))
	job, err := c.Submit(ctx, []string{p}, nil)
	if err != nil {
		t.Fatalf("submission with the disk held by a failed job's output: %v", err)
	}
	if exists(out) {
		t.Error("the failed job's output is still there")
	}
	if n := len(incoming(t, s)); n != 1 {
		t.Errorf("%d kept uploads on disk, want 1", n)
	}
	if _, _, err := c.Fetch(ctx, second.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("Fetch of the removed output: %v, want gone", err)
	}
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}
