package server_test

// Results a client fetches, and what a server does when they are odd,
// too many, changed while sent or left behind (docs/SECURITY.md, sections 2
// and 5), each against a real server on loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestStalledResultReader asks for large results and stops reading after
// the manifest: the server ends the session once the client is slower
// than server.MinTransferRate for the grace, keeps the results, and a
// fetch afterwards gets them.
func TestStalledResultReader(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 64 << 20 // well over what the loopback buffers hold
	s := servertest.Start(t, servertest.Options{
		Script: fmt.Sprintf("#!/bin/sh\nhead -c %d /dev/zero > \"$3/big.dat\"\n", size),
		Server: server.Options{IdleTimeout: time.Second},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	rc := rawClient(t, ctx, s)
	m, err := request(rc, protocol.TypeFetch, protocol.JobRef{JobID: job.JobID})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeResults, &protocol.Results{}); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, pollTimeout, "the server gives up on the stalled reader", func() bool {
		b, _ := os.ReadFile(s.LogPath)
		return bytes.Contains(b, []byte("sending result failed"))
	})
	n, err := io.Copy(io.Discard, rc)
	if err == nil || n >= size {
		t.Errorf("stalled reader got %d of %d bytes and %v; want the stream cut", n, size, err)
	}
	// A new session: the first one sat idle longer than the idle timeout.
	_, files, err := s.Dial(t).Fetch(ctx, job.JobID, t.TempDir(), nil)
	if err != nil || len(files) != 1 || files[0].Size != size {
		t.Fatalf("fetch after the stalled one: %+v, %v", files, err)
	}
}

// TestResultFilesOverCap makes a script write 100,000 files, ten times
// MAX_RESULT_FILES: the job fails with a clear error and keeps nothing.
func TestResultFilesOverCap(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Dir: memDir(t), Script: `#!/bin/sh
set -eu
cd "$3"
seq -f 'image%06g.dcm' 1 100000 | xargs touch
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "more than 10000 result files") || len(j.Results) != 0 {
		t.Fatalf("job ended %s (%q) with %d results; want failed for too many results", j.State, j.Error, len(j.Results))
	}
	waitGone(t, filepath.Join(s.Config.OutputBaseDir, job.JobID), "the output dir")
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("Fetch: %v, want code gone", err)
	}
}

// TestResultManifestTooLong makes a script write results within
// MAX_RESULT_FILES whose manifest would not fit in one message: the job
// fails clearly, instead of succeeding with results no one can fetch.
func TestResultManifestTooLong(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{
		Dir: memDir(t),
		Script: `#!/bin/sh
set -eu
cd "$3"
seq -f 'image%0200g.dcm' 1 20000 | xargs touch
`,
		Extra: map[string]string{"MAX_RESULT_FILES": "100000"},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "20000 result files") || len(j.Results) != 0 {
		t.Fatalf("job ended %s (%q) with %d results; want failed for a manifest too long", j.State, j.Error, len(j.Results))
	}
	if q, err := c.Queue(ctx); err != nil || len(q) != 1 {
		t.Errorf("queue: %d jobs, %v", len(q), err)
	}
}

// TestResultDeviceNodes makes a script (running as root) create device
// nodes in its output: only the regular file comes back.
func TestResultDeviceNodes(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		servertest.SkipUnlessStrict(t, "skipped: creating device nodes needs root")
	}
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
set -eu
out="$3"
echo image > "$out/normal.dcm"
mknod "$out/null" c 1 3
mknod "$out/disk" b 7 0
mkdir "$out/dev"
mknod "$out/dev/zero.dcm" c 1 5
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "succeeded" || len(j.Results) != 1 || j.Results[0].Name != "normal.dcm" {
		t.Fatalf("job ended %s (%s) with results %+v, want only normal.dcm", j.State, j.Error, j.Results)
	}
	dst := t.TempDir()
	if _, files, err := c.Fetch(ctx, job.JobID, dst, nil); err != nil || len(files) != 1 {
		t.Fatalf("fetch: %+v, %v", files, err)
	}
	if names := dirNames(t, dst); len(names) != 1 || names[0] != "normal.dcm" {
		t.Errorf("fetched %v", names)
	}
}

// bigResultServer runs a job whose result is size bytes of random data and
// returns the server, a client, the job and the result's path on the
// server.
func bigResultServer(t *testing.T, ctx context.Context, size int) (*servertest.Server, *client.Client, string, string) {
	t.Helper()
	s := servertest.Start(t, servertest.Options{Script: fmt.Sprintf("#!/bin/sh\nhead -c %d /dev/urandom > \"$3/big.dat\"\n", size)})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	return s, c, job.JobID, filepath.Join(s.Config.OutputBaseDir, job.JobID, "big.dat")
}

// TestResultGrowingWhileSent appends to a result on the server while it is
// fetched (a leftover process still writing): the client gets exactly the
// bytes that were collected and hashed.
func TestResultGrowingWhileSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 8 << 20
	_, c, id, path := bigResultServer(t, ctx, size)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte("more"), 1024)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.Write(chunk); err != nil {
				return
			}
		}
	}()
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, id, dst, nil)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("fetch of a growing result: %v", err)
	}
	got, err := os.ReadFile(files[0].Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetched %d bytes (%v), want the %d collected", len(got), err, len(want))
	}
}

// TestResultChangedWhileSent overwrites a result on the server in place
// while it is fetched: the client's hash check fails the fetch, nothing is
// written to the destination, and the results stay on the server.
func TestResultChangedWhileSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 32 << 20
	_, c, id, path := bigResultServer(t, ctx, size)
	var once sync.Once
	progress := func(done, total int64) {
		once.Do(func() {
			// Change the end of the file, which has not been sent yet.
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			f.WriteAt(bytes.Repeat([]byte{0}, 1<<20), size-1<<20)
			f.Close()
		})
	}
	dst := filepath.Join(t.TempDir(), "out")
	_, _, err := c.Fetch(ctx, id, dst, &client.FetchOptions{Progress: progress})
	// The client checks BLAKE3 (its default) against the digest taken
	// when the results were collected.
	if err == nil || !strings.Contains(err.Error(), "BLAKE3 mismatch") {
		t.Fatalf("fetch of a result changed while sent: %v, want a BLAKE3 mismatch", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the destination exists after a failed fetch: %v", err)
	}
	if !exists(path) {
		t.Errorf("the result was removed although the client did not confirm it")
	}
}

// TestResultRemovedBeforeFetch removes a result on the server after the
// job ended: a fetch fails with code gone before any byte is sent.
func TestResultRemovedBeforeFetch(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, c, id, path := bigResultServer(t, ctx, 1000)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Fetch(ctx, id, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("fetch of a removed result: %v, want code gone", err)
	}
}

// TestLeftoverResultsSweptAtRestart puts back, while the server is down,
// the results of a delivered job (as a crash between recording the
// delivery and removing them would leave) and of a job the store does not
// know: a restart removes both.
func TestLeftoverResultsSweptAtRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	s := servertest.Start(t, servertest.Options{Dir: dir})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	waitDone(t, ctx, c, job.JobID)
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Stop(t)
	unknown := "aaaaaaaaaaaaaaaaaaaaaaaaaa"
	for _, id := range []string{job.JobID, unknown} {
		d := filepath.Join(s.Config.OutputBaseDir, id)
		os.Mkdir(d, 0o700)
		writeInput(t, d, "left.dcm", []byte("left over"))
	}
	s2 := servertest.Start(t, servertest.Options{Dir: dir})
	if names := dirNames(t, s2.Config.OutputBaseDir); len(names) != 0 {
		t.Errorf("outputs dir holds %v after the restart", names)
	}
}
