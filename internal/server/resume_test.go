package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// resumeFiles are the files of the resume tests: one sent whole before
// the break, one broken off, one not started.
type resumeFiles struct {
	names []string
	data  [][]byte
}

func newResumeFiles(t *testing.T) *resumeFiles {
	return &resumeFiles{
		names: []string{"a.7", "b.7", "c.7"},
		data:  [][]byte{randomBytes(t, 10_000), randomBytes(t, 1<<20), randomBytes(t, 100_000)},
	}
}

func (r *resumeFiles) submit(sid string) protocol.Submit {
	sub := protocol.Submit{SubmissionID: sid, Options: map[string]string{"k": "v"}}
	for i, n := range r.names {
		sub.Files = append(sub.Files, protocol.FileInfo{Name: n, Size: int64(len(r.data[i]))})
	}
	return sub
}

// announce sends the submission on rc and returns the server's answer.
func announce(t *testing.T, rc *secure.Conn, sub protocol.Submit) (*protocol.SubmitReady, error) {
	t.Helper()
	m, err := request(rc, protocol.TypeSubmit, sub)
	if err != nil {
		t.Fatal(err)
	}
	var ready protocol.SubmitReady
	if err := m.Decode(protocol.TypeSubmitReady, &ready); err != nil {
		return nil, err
	}
	return &ready, nil
}

// sendRaw writes data and, if sum is not "", the FileDone with sum.
func sendRaw(t *testing.T, rc *secure.Conn, data []byte, sum string) {
	t.Helper()
	if err := trySendRaw(rc, data, sum); err != nil {
		t.Fatal(err)
	}
}

// trySendRaw is sendRaw that returns the write error: a server that
// refuses an upload answers and closes, so writing may fail before the
// answer is read.
func trySendRaw(rc *secure.Conn, data []byte, sum string) error {
	if _, err := rc.Write(data); err != nil {
		return err
	}
	if sum != "" {
		return protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sum})
	}
	return nil
}

// breakUpload sends the first file whole and cut bytes of the second on a
// new session; with closeConn it then closes the connection and waits
// until the server has parked the upload (or dropped it, with resuming
// off).
func breakUpload(t *testing.T, ctx context.Context, s *servertest.Server, r *resumeFiles, sid string, cut int, closeConn bool) *secure.Conn {
	t.Helper()
	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit(sid))
	if err != nil || ready.Resume != nil || ready.Existing {
		t.Fatalf("first announcement: %+v, %v", ready, err)
	}
	sendRaw(t, rc, r.data[0], sha256Hex(r.data[0]))
	sendRaw(t, rc, r.data[1][:cut], "")
	if closeConn {
		rc.Close()
		servertest.Eventually(t, pollTimeout, "the server sees the upload break", func() bool {
			return logHas(t, s, `"msg":"upload failed"`)
		})
	}
	return rc
}

// finishUpload sends what the server asks for after ready and returns the
// server's verdict.
func finishUpload(t *testing.T, rc *secure.Conn, r *resumeFiles, ready *protocol.SubmitReady) (*protocol.JobInfo, error) {
	t.Helper()
	for i, d := range r.data {
		off := int64(0)
		if ready.Resume != nil {
			off = ready.Resume[i]
		}
		// A refusal (a hash mismatch) may close the session before the
		// last files are sent: its answer is read all the same.
		if err := trySendRaw(rc, d[off:], sha256Hex(d)); err != nil {
			break
		}
	}
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

// checkJobFiles waits for job to succeed and fetches its results: the copy
// script's outputs must be the original files.
func checkJobFiles(t *testing.T, ctx context.Context, s *servertest.Server, r *resumeFiles, id string) {
	t.Helper()
	c := s.Dial(t)
	if j := waitDone(t, ctx, c, id); j.State != "succeeded" {
		t.Fatalf("job %s ended %s: %s", id, j.State, j.Error)
	}
	_, files, err := c.Fetch(ctx, id, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(r.names) {
		t.Fatalf("fetched %d files, want %d", len(files), len(r.names))
	}
	for i, n := range r.names {
		got, err := os.ReadFile(files[i].Path)
		if err != nil || files[i].Name != n+".out" || sha256Hex(got) != sha256Hex(r.data[i]) {
			t.Errorf("result %d: %s, %v: not the original %s", i, files[i].Name, err, n)
		}
	}
}

func logHas(t *testing.T, s *servertest.Server, want string) bool {
	t.Helper()
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), want)
}

// TestResumeUpload breaks an upload in the middle of its second file: the
// next session with the same submission id is told what the server kept
// (the first file whole, the bytes of the second), sends only the rest,
// and the job's files are the originals.
func TestResumeUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "resume-1", 300_000, true)

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("resume-1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{10_000, 300_000, 0}; !slices.Equal(ready.Resume, want) {
		t.Fatalf("resume offsets %v, want %v", ready.Resume, want)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatalf("resumed upload: %v", err)
	}
	for i, f := range job.Files {
		if f.SHA256 != sha256Hex(r.data[i]) || f.Size != int64(len(r.data[i])) {
			t.Errorf("job file %d: %+v", i, f)
		}
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
	if !logHas(t, s, `"msg":"upload resumed"`) || !logHas(t, s, `"bytes_kept":310000`) {
		t.Error("the server log does not show the resume")
	}
	if len(incoming(t, s)) != 0 {
		t.Errorf("upload dirs left: %v", incoming(t, s))
	}
	// The submission is done: a third announcement gets the job.
	ready, err = announce(t, rawClient(t, ctx, s), r.submit("resume-1"))
	if err != nil || !ready.Existing || ready.Job.JobID != job.JobID {
		t.Fatalf("announcement after the job: %+v, %v", ready, err)
	}
}

// TestResumeTakesOverStaleSession resumes while the broken session is
// still open on the server (a client that reconnected before the server
// saw the old connection die): the server ends the old session and
// resumes from what it had received.
func TestResumeTakesOverStaleSession(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	old := breakUpload(t, ctx, s, r, "stale", 123_456, false)
	// The first file must have arrived whole before the takeover: closing
	// the old session discards what it had not read yet.
	servertest.Eventually(t, pollTimeout, "the server has the first file whole", func() bool {
		m, _ := filepath.Glob(filepath.Join(s.Config.InputBaseDir, ".incoming-*", r.names[0]))
		return len(m) == 1
	})

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("stale"))
	if err != nil {
		t.Fatal(err)
	}
	// The old session's last bytes may still have been in flight when the
	// server ended it: at most what was sent is kept.
	if len(ready.Resume) != 3 || ready.Resume[0] != 10_000 || ready.Resume[1] > 123_456 || ready.Resume[2] != 0 {
		t.Fatalf("resume offsets %v, want [10000 <=123456 0]", ready.Resume)
	}
	expectSessionEnd(t, old)
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatalf("resumed upload: %v", err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}

// TestResumeDetectsAlteredPart alters the kept part on the server's disk
// before the resume: the end-to-end hash catches it, the kept upload is
// dropped, and the next attempt starts over and succeeds.
func TestResumeDetectsAlteredPart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "altered", 200_000, true)
	m, _ := filepath.Glob(filepath.Join(s.Config.InputBaseDir, ".incoming-*", "part:1"))
	if len(m) != 1 {
		t.Fatalf("parts: %v", m)
	}
	f, err := os.OpenFile(m[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{r.data[1][1000] ^ 1}, 1000)
	f.Close()

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("altered"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := finishUpload(t, rc, r, ready); !protocol.IsCode(err, protocol.CodeHashMismatch) || !strings.Contains(err.Error(), "after resuming at byte 200000") {
		t.Fatalf("resume over an altered part: %v, want a hash mismatch after resuming", err)
	}
	servertest.Eventually(t, pollTimeout, "the kept upload is dropped", func() bool { return len(incoming(t, s)) == 0 })

	rc = rawClient(t, ctx, s)
	ready, err = announce(t, rc, r.submit("altered"))
	if err != nil || ready.Resume != nil {
		t.Fatalf("announcement after the mismatch: %+v, %v; want a fresh start", ready, err)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatal(err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}

// TestResumeConflict announces other files under the submission id of a
// kept upload: a clear conflict, and the kept upload stays resumable.
func TestResumeConflict(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "conflict", 5000, true)
	other := r.submit("conflict")
	other.Files[2].Size++
	_, err := announce(t, rawClient(t, ctx, s), other)
	if !protocol.IsCode(err, protocol.CodeConflict) {
		t.Fatalf("other files under a kept submission id: %v, want conflict", err)
	}
	opts := r.submit("conflict")
	opts.Options = map[string]string{"k": "other"}
	if _, err := announce(t, rawClient(t, ctx, s), opts); !protocol.IsCode(err, protocol.CodeConflict) {
		t.Fatalf("other options under a kept submission id: %v, want conflict", err)
	}
	// Operators see the kept upload.
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
	if k := st.KeptUploads; len(k) != 1 || k[0].SubmissionID != "conflict" || k[0].State != "waiting" ||
		k[0].Files != 3 || k[0].Bytes != 10_000+1<<20+100_000 || k[0].BytesKept != 15_000 || k[0].Expires == nil {
		t.Errorf("admin status kept uploads: %+v", k)
	}
	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("conflict"))
	if err != nil || !slices.Equal(ready.Resume, []int64{10_000, 5000, 0}) {
		t.Fatalf("resume after the conflicts: %+v, %v", ready, err)
	}
}

// TestResumeAfterRestart breaks an upload, restarts the server on its data
// and resumes: the kept upload survives the restart (its manifest names
// the submission), and the file kept whole is checked again from disk.
func TestResumeAfterRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "restart", 777_777, true)
	s.Stop(t)
	s = servertest.Start(t, servertest.Options{Dir: s.Dir})

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("restart"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{10_000, 777_777, 0}; !slices.Equal(ready.Resume, want) {
		t.Fatalf("resume offsets after a restart %v, want %v", ready.Resume, want)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatalf("resumed upload: %v", err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}

// TestResumeExpires keeps a broken upload for UPLOAD_RESUME_HOURS (here
// 0.36 s): then it is removed, and the same submission starts over.
func TestResumeExpires(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"UPLOAD_RESUME_HOURS": "0.0001"}})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "expires", 4096, true)
	servertest.Eventually(t, pollTimeout, "the expired upload is removed", func() bool {
		return len(incoming(t, s)) == 0 && logHas(t, s, "broken upload expired")
	})
	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("expires"))
	if err != nil || ready.Resume != nil {
		t.Fatalf("announcement after expiry: %+v, %v; want a fresh start", ready, err)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatal(err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}

// TestResumeOff drops broken uploads at once when UPLOAD_RESUME_HOURS is 0.
func TestResumeOff(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"UPLOAD_RESUME_HOURS": "0"}})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "off", 4096, true)
	checkNothingStored(t, ctx, s)
	ready, err := announce(t, rawClient(t, ctx, s), r.submit("off"))
	if err != nil || ready.Resume != nil {
		t.Fatalf("announcement with resuming off: %+v, %v", ready, err)
	}
}

// submitThroughCut submits a file of size random bytes to s with the
// client package, through a CutProxy that cuts the first connection after
// cutAfter bytes and refuses the next refuse ones (RefuseNext). It fails
// the test if Submit fails, and returns the file's bytes, the proxy, the
// client (on its new session), the job and the errors Submit reconnected
// after.
func submitThroughCut(t *testing.T, ctx context.Context, s *servertest.Server, size, cutAfter int64, refuse int) ([]byte, *servertest.CutProxy, *client.Client, *client.Job, []error) {
	t.Helper()
	data := randomBytes(t, int(size))
	in := writeInput(t, t.TempDir(), "big.7", data)
	p := servertest.StartCutProxy(t, s.Addr().String(), cutAfter)
	p.RefuseNext(refuse)
	cfg := s.ClientConfig()
	cfg.Address = p.Addr()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var reconnects []error
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{
		ReconnectDelay: 10 * time.Millisecond,
		OnReconnect:    func(n int, err error) { reconnects = append(reconnects, err) },
	})
	if err != nil {
		t.Fatalf("Submit through a cut connection (and %d refused new sessions): %v", refuse, err)
	}
	if len(job.Files) != 1 || !sameContent(job.Files[0].SHA256, job.Files[0].BLAKE3, data) {
		t.Fatalf("job files %+v", job.Files)
	}
	if !logHas(t, s, `"msg":"upload resumed"`) {
		t.Error("the server log does not show the resume")
	}
	return data, p, c, job, reconnects
}

// TestClientResumesAfterCut submits a 32 MiB file through a connection
// cut after 8 MiB: the client package reconnects and resumes on its own,
// sending well under twice the file in all, and the job's file is whole.
func TestClientResumesAfterCut(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	const size = 32 << 20
	_, p, c, job, reconnects := submitThroughCut(t, ctx, s, size, 8<<20, 0)
	if len(reconnects) != 1 {
		t.Errorf("reconnected %d times (%v), want once", len(reconnects), reconnects)
	}
	if up := p.UpTotal(); up > size*3/2 {
		t.Errorf("%d bytes went to the server for a %d-byte file: the upload started over", up, size)
	}
	// The client goes on with the new session.
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s", j.State)
	}
}

// TestClientResumesAfterRefusedRedial cuts an upload, then has the first
// new session closed unanswered, as a server over its per-address caps
// closes one (the proxy closes it before the handshake): Submit counts
// that refusal as a reconnect, dials again and resumes, and the caller
// sees no error.
func TestClientResumesAfterRefusedRedial(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	_, p, _, _, reconnects := submitThroughCut(t, ctx, s, 16<<20, 4<<20, 1)
	if p.Refused() != 1 {
		t.Errorf("the proxy refused %d sessions, want 1", p.Refused())
	}
	if len(reconnects) != 2 || !errors.Is(reconnects[1], secure.ErrClosedUnanswered) {
		t.Errorf("reconnects %v: want two, the second after the refused session (ErrClosedUnanswered)", reconnects)
	}
}

// TestResumeRefusedKeepsUpload resumes while the disk is too full for the
// rest: the refusal (no_space) leaves the kept upload alone, and once
// there is room the same resume goes through.
func TestResumeRefusedKeepsUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s, disk := smallDiskServer(t)
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "full", 300_000, true)

	// Something else fills the disk, leaving less than the rest needs.
	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(disk, "junk")
	if err := os.WriteFile(junk, make([]byte, int64(st.Bavail)*st.Bsize-200_000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := announce(t, rawClient(t, ctx, s), r.submit("full")); !protocol.IsCode(err, protocol.CodeNoSpace) {
		t.Fatalf("resume with the disk full: %v, want no_space", err)
	}
	os.Remove(junk)
	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("full"))
	if err != nil || !slices.Equal(ready.Resume, []int64{10_000, 300_000, 0}) {
		t.Fatalf("resume once there is room: %+v, %v; want the kept bytes", ready, err)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatal(err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}
