package relay_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestHelloThroughRelay: with backends of protocol 3, a client that offers
// BLAKE3 (the Go client's default) gets BLAKE3 through the relay: the
// relay's sessions to the backend say hello with BLAKE3, the backend
// checks the client's BLAKE3 digests, and the fetch is checked against the
// results' BLAKE3, while each result keeps its SHA-256. A client that
// offers SHA-256 only gets SHA-256.
func TestHelloThroughRelay(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String()}, key, nil))
	servertest.Eventually(t, 10*time.Second, "the backend is up", func() bool { return r.healthy(t, bs[0].Addr().String()) })
	in := writeInput(t, dir, "h.7", 3<<20, 5)
	for _, tt := range []struct {
		name  string
		offer []string
		hash  string
	}{
		{"blake3", nil, protocol.HashBLAKE3},
		{"sha256", []string{protocol.HashSHA256}, protocol.HashSHA256},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := r.clientConfig()
			cfg.Hashes = tt.offer
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: client.NewSubmissionID()})
			if err != nil {
				t.Fatal(err)
			}
			f := job.Files[0]
			if tt.hash == protocol.HashBLAKE3 && (f.BLAKE3 != fileBLAKE3(t, in) || f.SHA256 != "") ||
				tt.hash == protocol.HashSHA256 && (f.SHA256 != fileSHA(t, in) || f.BLAKE3 != "") {
				t.Errorf("the input through the relay: %+v, want it checked with %s", f, tt.hash)
			}
			// The job's views through the relay name the input's digest
			// as the session's hash does: status, wait and queue.
			checkInput := func(what string, j *client.Job) {
				t.Helper()
				if len(j.Files) != 1 || j.Files[0] != f {
					t.Errorf("%s through the relay: files %+v, want %+v", what, j.Files, f)
				}
			}
			j, err := c.Job(ctx, job.JobID)
			if err != nil {
				t.Fatal(err)
			}
			checkInput("status", j)
			if j, err = c.Wait(ctx, job.JobID, nil); err != nil {
				t.Fatal(err)
			}
			checkInput("wait", j)
			q, err := c.Queue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if i := slices.IndexFunc(q, func(x client.Job) bool { return x.JobID == job.JobID }); i < 0 {
				t.Errorf("queue through the relay: no job %s in %+v", job.JobID, q)
			} else {
				checkInput("queue", &q[i])
			}
			_, files, err := c.Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
			if err != nil || len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) || files[0].SHA256 != fileSHA(t, in) {
				t.Fatalf("fetch through the relay: %+v, %v", files, err)
			}
			if got := files[0].BLAKE3 != ""; got != (tt.hash == protocol.HashBLAKE3) {
				t.Errorf("the manifest through the relay: %+v, want a BLAKE3 only in a BLAKE3 session", files[0])
			}
		})
	}
}

// TestHelloThroughRelayOldBackend: while one backend says it speaks
// protocol 2 (a fake that answers status only), the relay gives every
// client SHA-256, since its job may go to that backend.
func TestHelloThroughRelayOldBackend(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	old := oldBackend(t, key)
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String(), old}, key, nil))
	servertest.Eventually(t, 10*time.Second, "both backends are up", func() bool {
		return r.healthy(t, bs[0].Addr().String()) && r.healthy(t, old)
	})
	rc, err := secure.Dial(ctx, r.Addr().String(), secure.Config{Key: mustParse(t, r.Key), Role: secure.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var rep protocol.HelloReply
	if err := rpc.Exchange(rc, protocol.TypeHello, protocol.Hello{Hashes: []string{"blake3", "sha256"}}, protocol.TypeHelloReply, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Hash != protocol.HashSHA256 {
		t.Errorf("hello through a relay with a protocol-2 backend chose %q, want sha256", rep.Hash)
	}
}

// oldBackend is a fake backend of protocol 2 that answers status requests
// only (the relay's health checks).
func oldBackend(t *testing.T, key string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c, err := secure.Server(ctx, conn, secure.Config{Key: mustParse(t, key), Role: secure.RoleClient})
				if err != nil {
					conn.Close()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for {
					m, err := protocol.ReadMessage(c)
					if err != nil || m.Type != protocol.TypeStatus {
						return
					}
					protocol.WriteMessage(c, protocol.TypeStatusReply, protocol.StatusReply{Version: "old", Protocol: 2, MaxWorkers: 1, StartedAt: time.Now()})
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); stop(); <-done })
	return ln.Addr().String()
}

func fileBLAKE3(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := protocol.NewHash(protocol.HashBLAKE3)
	h.Write(b)
	return protocol.HexSum(h)
}

func mustParse(t testing.TB, s string) keys.Key {
	t.Helper()
	k, err := keys.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
