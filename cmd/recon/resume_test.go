package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// writeRandomFile writes size pseudo-random bytes (a fixed seed): a resume
// from a wrong offset changes the result, unlike with repeated bytes.
func writeRandomFile(t *testing.T, path string, size int64, seed byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	s[0] = seed
	if _, err := io.CopyN(f, rand.NewChaCha8(s), size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// resumedRecords returns the bytes_kept of the server log's "upload
// resumed" records.
func resumedRecords(t *testing.T, logPath string) []int64 {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kept []int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg       string `json:"msg"`
			BytesKept *int64 `json:"bytes_kept"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "upload resumed" {
			continue
		}
		if rec.BytesKept == nil {
			t.Fatalf("server log: \"upload resumed\" without bytes_kept: %s", sc.Text())
		}
		kept = append(kept, *rec.BytesKept)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kept
}

// TestSubmitResumesAfterCut cuts a `recon submit` upload in the middle and
// checks it is resumed, not started again: by the client on its own, or
// by a later run with the same --submission-id after one that was told
// not to reconnect.
func TestSubmitResumesAfterCut(t *testing.T) {
	const (
		size     = 64 << 20
		cutAfter = 40 << 20 // a restart from zero would send 104 MiB: > 1.5× size
	)
	setup := func(t *testing.T) (dir, in string, proxy *servertest.CutProxy) {
		dir = t.TempDir()
		key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
		srv := startServer(t, dir, "recon.opts")
		proxy = servertest.StartCutProxy(t, srv.clientAddr, cutAfter)
		clientOpts(t, filepath.Join(dir, "client.opts"), proxy.Addr(), key)
		in = filepath.Join(dir, "scan.7")
		writeRandomFile(t, in, size, 7)
		return dir, in, proxy
	}
	checkOutput := func(t *testing.T, dir, in string) {
		t.Helper()
		if got, want := sha(t, filepath.Join(dir, "out", "scan.7.out")), sha(t, in); got != want {
			t.Errorf("output SHA-256 %s, input %s", got, want)
		}
	}
	checkBytes := func(t *testing.T, proxy *servertest.CutProxy) {
		t.Helper()
		up := proxy.UpTotal()
		t.Logf("client→server bytes through the proxy: %d (%.3f× the file)", up, float64(up)/size)
		if up >= size*3/2 {
			t.Errorf("client sent %d bytes for a file of %d: the upload was not resumed", up, size)
		}
	}
	// checkResumed checks that the upload was resumed once, over two
	// connections, sending well under twice the file, and that the result
	// is the input.
	checkResumed := func(t *testing.T, dir, in string, proxy *servertest.CutProxy) {
		t.Helper()
		kept := resumedRecords(t, filepath.Join(dir, "recon.log"))
		t.Logf("server kept %v bytes", kept)
		if len(kept) != 1 || kept[0] <= 0 {
			t.Errorf("server log: upload resumed with bytes_kept %v, want one record with some bytes kept", kept)
		}
		if n := len(proxy.Up()); n != 2 {
			t.Errorf("%d connections through the proxy, want 2", n)
		}
		checkOutput(t, dir, in)
		checkBytes(t, proxy)
	}
	checkCut := func(t *testing.T, proxy *servertest.CutProxy) {
		t.Helper()
		select {
		case <-proxy.Cut():
		default:
			t.Fatal("the proxy never cut the first connection")
		}
	}

	t.Run("negative", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "f"), "x", 0o644)
		r := runRecon(t, dir, "submit", "--opts", "none.opts", "--reconnects", "-1", "f")
		if r.code != exitUsage || !strings.Contains(r.stderr, "--reconnects") {
			t.Errorf("recon submit --reconnects -1: exit %d, stderr:\n%s", r.code, r.stderr)
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		dir, in, proxy := setup(t)
		start := time.Now()
		r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", in)
		t.Logf("recon submit took %s", time.Since(start).Round(time.Millisecond))
		if r.code != 0 {
			t.Fatalf("recon submit exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		checkCut(t, proxy)
		t.Logf("stderr: %s", strings.TrimSpace(r.stderr))
		if !strings.Contains(r.stderr, "reconnecting to resume the upload (attempt 1 of 5)") {
			t.Errorf("stderr lacks the reconnect line:\n%s", r.stderr)
		}
		checkResumed(t, dir, in, proxy)
	})

	t.Run("no-reconnect-then-rerun", func(t *testing.T) {
		dir, in, proxy := setup(t)
		// Without --submission-id, the error names the one derived from
		// the file, and the same command resumes.
		r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "--reconnects", "0", in)
		if r.code != 1 {
			t.Fatalf("recon submit --reconnects 0 through a cut: exit %d, want 1\nstderr:\n%s", r.code, r.stderr)
		}
		checkCut(t, proxy)
		m := regexp.MustCompile(`\(submission id (cli-[0-9a-f]{64})\): .*: run the same command again to resume it`).FindStringSubmatch(r.stderr)
		if !strings.HasPrefix(r.stderr, "recon: upload interrupted after sending ") || m == nil ||
			strings.Contains(r.stderr, "reconnecting") {
			t.Fatalf("stderr of the failed submit:\n%s", r.stderr)
		}
		sid := m[1]
		t.Logf("failed submit said: %s", strings.TrimSpace(r.stderr))
		if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("output dir after a failed submit: %v", err)
		}
		if kept := resumedRecords(t, filepath.Join(dir, "recon.log")); len(kept) != 0 {
			t.Errorf("server log: upload resumed %v before the second run", kept)
		}

		t.Logf("submission id %s", sid)
		r = runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", in)
		if r.code != 0 {
			t.Fatalf("second recon submit exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if strings.Contains(r.stderr, "reconnecting") {
			t.Errorf("second submit reconnected:\n%s", r.stderr)
		}
		checkResumed(t, dir, in, proxy)
	})
}

// TestFetchReconnectsAfterCut cuts `recon fetch` in the middle of a 32 MiB
// result: it reconnects, downloads the results again and verifies them;
// with --reconnects 0 it fails, saying the results stay on the server.
func TestFetchReconnectsAfterCut(t *testing.T) {
	const size = 32 << 20
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "direct.opts"), srv.clientAddr, key)
	in := filepath.Join(dir, "scan.7")
	writeRandomFile(t, in, size, 9)
	r := runRecon(t, dir, "submit", "--opts", "direct.opts", "--no-wait", in)
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)

	// Told not to reconnect, the fetch fails and keeps nothing; the
	// results stay on the server.
	proxy := servertest.StartCutProxyDown(t, srv.clientAddr, 8<<20)
	clientOpts(t, filepath.Join(dir, "cut.opts"), proxy.Addr(), key)
	r = runRecon(t, dir, "fetch", "--opts", "cut.opts", "--output", "out", "--reconnects", "0", id)
	if r.code != 1 || !strings.Contains(r.stderr, "stay on the server: run recon fetch "+id) {
		t.Fatalf("fetch --reconnects 0 through a cut: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a broken fetch left its output dir: %v", err)
	}

	// Reconnecting, it gets the whole results.
	proxy = servertest.StartCutProxyDown(t, srv.clientAddr, 8<<20)
	clientOpts(t, filepath.Join(dir, "cut.opts"), proxy.Addr(), key)
	r = runRecon(t, dir, "fetch", "--opts", "cut.opts", "--output", "out", id)
	if r.code != 0 {
		t.Fatalf("fetch through a cut: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	select {
	case <-proxy.Cut():
	default:
		t.Fatal("the proxy never cut the first connection")
	}
	if !strings.Contains(r.stderr, "recon: fetch the results of job "+id+": ") || !strings.Contains(r.stderr, "; reconnecting in 1s (attempt 1 of 5)") {
		t.Errorf("stderr lacks the reconnect line:\n%s", r.stderr)
	}
	if got, want := sha(t, filepath.Join(dir, "out", "scan.7.out")), sha(t, in); got != want {
		t.Errorf("fetched result SHA-256 %s, input %s", got, want)
	}
}
