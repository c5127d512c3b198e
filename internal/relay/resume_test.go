package relay_test

// A resumable upload through the relay: the client's connection to the
// relay breaks in the middle of a file, the client reconnects on its own,
// and the relay sends the retried submission id back to the backend that
// kept the broken upload, which takes only the rest of the bytes.

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// writeRandomInput writes n pseudo-random bytes (fixed by seed) to a file:
// unlike writeInput's pattern, which repeats every 256 bytes, a resume at
// a wrong offset cannot give the same SHA-256.
func writeRandomInput(t *testing.T, dir, name string, n int, seed uint64) string {
	t.Helper()
	var s [32]byte
	s[0] = byte(seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestResumeThroughRelay cuts a client's connection to the relay after
// 20 MiB of a 32 MiB upload. Submit reconnects once, the relay sends the
// retried submission id to the backend that kept the broken upload, and
// the client sends only the rest: one job in all, whose result matches the
// input, and fewer than 1.5 times the file's bytes sent in all (starting
// over would have taken 52 MiB).
func TestResumeThroughRelay(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const (
		size     = 32 << 20
		cutAfter = 20 << 20
		sid      = "resume-through-relay"
	)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String(), bs[1].Addr().String()}, key, nil))
	p := servertest.StartCutProxy(t, r.Addr().String(), cutAfter)
	in := writeRandomInput(t, dir, "big.7", size, 5)

	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, client.Config{Address: p.Addr(), Key: r.Key, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial the relay through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })

	var mu sync.Mutex
	var reconnects []error
	start := time.Now()
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{
		SubmissionID:   sid,
		ReconnectDelay: 10 * time.Millisecond,
		OnReconnect: func(attempt int, err error) {
			mu.Lock()
			defer mu.Unlock()
			reconnects = append(reconnects, err)
			if attempt != len(reconnects) {
				t.Errorf("reconnect numbered %d, is the %d.", attempt, len(reconnects))
			}
		},
	})
	if err != nil {
		t.Fatalf("submit through a connection cut after %d bytes: %v", cutAfter, err)
	}
	t.Logf("submit with one cut took %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-p.Cut():
	default:
		t.Fatal("the submission succeeded without the proxy cutting its connection")
	}
	mu.Lock()
	if len(reconnects) != 1 {
		t.Errorf("submit reconnected %d times (%v), want once", len(reconnects), reconnects)
	} else {
		t.Logf("reconnected after: %v", reconnects[0])
	}
	mu.Unlock()

	// Only the rest went through again.
	counts := p.Up()
	var sent int64
	for _, n := range counts {
		sent += n
	}
	t.Logf("client→relay bytes per connection: %v; %d in all for a %d-byte file", counts, sent, size)
	if len(counts) != 2 || counts[0] != cutAfter {
		t.Errorf("client→relay bytes per connection %v, want %d on the first and one more connection", counts, cutAfter)
	}
	if sent >= size*3/2 {
		t.Errorf("%d client→relay bytes in all for a %d-byte file: the upload started over", sent, size)
	}

	// The job is on one backend, the one the broken upload went to.
	var on *servertest.Server
	total := 0
	for _, b := range bs {
		n := jobsFor(t, ctx, b, sid)
		total += n
		if n > 0 {
			on = b
		}
	}
	if total != 1 {
		t.Fatalf("submission %s is %d jobs on the backends, want 1", sid, total)
	}
	if job.Backend != on.Addr().String() {
		t.Errorf("the relay says the job is on %s; it is on %s", job.Backend, on.Addr())
	}

	// That backend resumed the upload it kept; neither keeps a part.
	var kept float64
	if resumed := servertest.LogRecords(t, on.LogPath, "upload resumed"); len(resumed) != 1 {
		t.Errorf("%s logged %d \"upload resumed\", want 1", on.LogPath, len(resumed))
	} else if kept, _ = resumed[0]["bytes_kept"].(float64); kept <= 0 || kept > cutAfter {
		t.Errorf("the backend resumed with %v bytes kept, want some and at most the %d sent before the cut", resumed[0]["bytes_kept"], cutAfter)
	}
	t.Logf("the backend kept %d bytes", int64(kept))
	if len(counts) == 2 && kept > 0 && counts[1] > size-int64(kept)+1<<20 {
		t.Errorf("the second connection carried %d bytes, for the %d the backend did not keep", counts[1], size-int64(kept))
	}
	servertest.Eventually(t, 10*time.Second, "the backend logs the broken upload", func() bool {
		return len(servertest.LogRecords(t, on.LogPath, "upload broken; kept for resuming")) == 1
	})
	for _, b := range bs {
		if b == on {
			continue
		}
		if n := len(servertest.LogRecords(t, b.LogPath, "upload resumed")); n != 0 {
			t.Errorf("the other backend %s logged %d resumed uploads", b.Addr(), n)
		}
	}
	for _, b := range bs {
		if m, _ := filepath.Glob(filepath.Join(b.Config.InputBaseDir, ".incoming-*")); len(m) != 0 {
			t.Errorf("backend %s keeps an upload: %v", b.Addr(), m)
		}
	}

	// The job runs, and its result is the input.
	done, err := c.Wait(ctx, job.JobID, nil)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if done.State != "succeeded" {
		t.Fatalf("job %s ended %s: %s", job.JobID, done.State, done.Error)
	}
	_, files, err := c.Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) {
		t.Fatalf("results %+v do not match the input", files)
	}
}

// TestEvictedUploadNoteThroughRelay cuts an upload through the relay to a
// backend that keeps no broken upload over 1 KiB per client (the relay
// counts as one): the backend removes the part it kept, and the client,
// reconnecting, is told through the relay that every file is sent again.
func TestEvictedUploadNoteThroughRelay(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const size, cutAfter = 4 << 20, 2 << 20
	key := keys.MustGenerate().Encode()
	b := startBackends(t, 1, key, servertest.Options{Extra: map[string]string{"MAX_KEPT_UPLOAD_BYTES_PER_CLIENT": "1KiB"}})[0]
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{b.Addr().String()}, key, nil))
	p := servertest.StartCutProxy(t, r.Addr().String(), cutAfter)
	in := writeRandomInput(t, dir, "big.7", size, 7)

	c, err := client.Dial(ctx, client.Config{Address: p.Addr(), Key: r.Key, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial the relay through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	const removed = "kept upload removed: over the space kept for broken uploads (MAX_KEPT_UPLOAD_BYTES_PER_CLIENT, MAX_KEPT_UPLOAD_BYTES)"
	var notes []string
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{
		SubmissionID:   "evicted-through-relay",
		ReconnectDelay: 10 * time.Millisecond,
		// Reconnect once the backend has removed the part it kept.
		OnReconnect: func(int, error) {
			servertest.Eventually(t, 20*time.Second, "the backend removes the kept upload", func() bool {
				return len(servertest.LogRecords(t, b.LogPath, removed)) == 1
			})
		},
		OnNote: func(n string) { notes = append(notes, n) },
	})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "every file is sent again from the start") {
		t.Errorf("notes through the relay: %q", notes)
	}
	if j, err := c.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("job: %+v, %v", j, err)
	}
}
