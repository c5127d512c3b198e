package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestIdleSession checks that an authenticated session that sends no
// request within the idle timeout is closed, while a Wait that lasts
// longer than the idle timeout is not cut.
func TestIdleSession(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: releaseScript(sig),
		Server: server.Options{IdleTimeout: 500 * time.Millisecond},
	})
	idle := rawClient(t, ctx, s)
	if err := expectHangUp(idle, 10*time.Second); err != nil {
		t.Errorf("idle session: %v", err)
	}

	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	waitJob(t, ctx, c, job.JobID, "running", func(j *client.Job) bool { return j.State == "running" })
	start := time.Now()
	go func() {
		// Release once the Wait has lasted a few idle timeouts (this sleep
		// is the point of the test, not a synchronisation).
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
		}
		os.WriteFile(filepath.Join(sig, "release-all"), nil, 0o600)
	}()
	j, err := c.Wait(ctx, job.JobID, nil)
	if err != nil {
		t.Fatalf("Wait longer than the idle timeout: %v", err)
	}
	if j.State != "succeeded" || time.Since(start) < 1500*time.Millisecond {
		t.Fatalf("Wait ended %s after %s", j.State, time.Since(start))
	}
}

// TestInterruptedFetch checks that results stay on the server until the
// client acknowledges them: a client that reads the manifest and hangs
// up, or acknowledges another job, can fetch again.
func TestInterruptedFetch(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	c := s.Dial(t)
	data := randomBytes(t, 200<<10)
	job := submitOne(t, ctx, c, "P1.7", data)
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s", j.State)
	}

	// Read the manifest and part of a file, then hang up.
	rc := rawClient(t, ctx, s)
	m, err := request(rc, protocol.TypeFetch, protocol.JobRef{JobID: job.JobID})
	if err != nil {
		t.Fatal(err)
	}
	var res protocol.Results
	if err := m.Decode(protocol.TypeResults, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 1 || res.Files[0].SHA256 != sha256Hex(data) {
		t.Fatalf("manifest %+v", res.Files)
	}
	buf := make([]byte, 1000)
	if _, err := rc.Read(buf); err != nil {
		t.Fatal(err)
	}
	rc.Close()

	// Read everything, then acknowledge another job.
	rc = rawClient(t, ctx, s)
	m, err = request(rc, protocol.TypeFetch, protocol.JobRef{JobID: job.JobID})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeResults, &res); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, res.Files[0].Size)
	if _, err := readFull(rc, got); err != nil {
		t.Fatal(err)
	}
	if sha256Hex(got) != res.Files[0].SHA256 {
		t.Fatalf("result bytes do not match the manifest")
	}
	m, err = request(rc, protocol.TypeAck, protocol.JobRef{JobID: "0" + job.JobID[1:]})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeAckDone, nil); !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Errorf("ack of another job: %v, want code bad_request", err)
	}
	rc.Close()

	j, err := c.Job(ctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Delivered || j.ResultsGone {
		t.Fatalf("results marked delivered (%v) or gone (%v) without an acknowledgement", j.Delivered, j.ResultsGone)
	}
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, job.JobID, dst, nil)
	if err != nil {
		t.Fatalf("Fetch after interrupted fetches: %v", err)
	}
	b, err := os.ReadFile(files[0].Path)
	if err != nil || string(b) != string(data) {
		t.Fatalf("fetched result differs from the input (%v)", err)
	}
}

func readFull(c interface{ Read([]byte) (int, error) }, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestResultLimits checks that a job whose results exceed
// MAX_RESULT_FILES fails with a clear error and keeps nothing.
func TestResultLimits(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{
		Script: `#!/bin/sh
for i in 1 2 3; do echo "$i" > "$3/image$i.dcm"; done
`,
		Extra: map[string]string{"MAX_RESULT_FILES": "2"},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "collecting results") || len(j.Results) != 0 {
		t.Fatalf("job ended %s (%q) with %d results; want failed for too many results, none kept", j.State, j.Error, len(j.Results))
	}
	if strings.Contains(j.Error, s.Dir) {
		t.Errorf("job error %q shows a server path", j.Error)
	}
	if exists(filepath.Join(s.Config.OutputBaseDir, job.JobID)) {
		t.Errorf("output dir of the failed job kept")
	}
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("Fetch: %v, want code gone", err)
	}
}

// TestShutdownDuringUpload stops the server in the middle of an upload:
// the upload leaves nothing behind, and a server started on the same
// directory removes what a crash would have left.
func TestShutdownDuringUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	s1 := servertest.Start(t, servertest.Options{Dir: dir})
	rc := rawClient(t, ctx, s1)
	m, err := request(rc, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "big.7", Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Write(randomBytes(t, 1000)); err != nil {
		t.Fatal(err)
	}
	if inc := incoming(t, s1); len(inc) != 1 {
		t.Fatalf("upload dirs during the upload: %v", inc)
	}
	s1.Stop(t)
	if names := dirNames(t, s1.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir holds %v after a shutdown during an upload", names)
	}

	// What a crash leaves: an upload dir, and the input dir of a job the
	// store does not know.
	for _, d := range []string{".incoming-crashed", jobs.NewID()} {
		p := filepath.Join(s1.Config.InputBaseDir, d)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		writeInput(t, p, "P1.7", []byte("partial"))
	}
	s2 := servertest.Start(t, servertest.Options{Dir: dir})
	if names := dirNames(t, s2.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir holds %v after a restart", names)
	}
	checkNoJobs(t, ctx, s2)
	c := s2.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job after the restart ended %s (%s)", j.State, j.Error)
	}
}
