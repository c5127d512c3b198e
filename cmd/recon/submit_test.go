package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestSubmitMoreFilesThanOpenFiles submits 300 files with `recon submit`
// limited to 64 open files: the client opens each file only while it
// describes or sends it, so a job may have more files than a process may
// hold open.
func TestSubmitMoreFilesThanOpenFiles(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", "#!/bin/sh\nls \"$1\" | wc -l > \"$3/count\"\n"))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	in := filepath.Join(dir, "in")
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := range 300 {
		p := filepath.Join(in, fmt.Sprintf("f%03d.7", i))
		writeFile(t, p, fmt.Sprint(i), 0o600)
		args = append(args, p)
	}
	cmd := exec.Command("sh", append([]string{"-c", `ulimit -n 64 && exec "$0" "$@"`, reconBin, "submit", "--opts", "client.opts", "--output", "out"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recon submit of 300 files with 64 open files: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "count"))
	if err != nil || strings.TrimSpace(string(b)) != "300" {
		t.Errorf("the script saw %q files, want 300", b)
	}
}

// TestRelayProcessKilled kills a real `recon relay` with SIGKILL in the
// middle of an upload: the client's submission fails; a relay restarted on
// the same state takes the retry with the same submission id, and the
// submission is one job on the backends.
func TestRelayProcessKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	key := keys.MustGenerate().Encode()
	var backends []*servertest.Server
	var addrs []string
	for range 2 {
		s := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
		backends = append(backends, s)
		addrs = append(addrs, s.Addr().String())
	}
	clientKey, _ := relayOpts(t, dir, addrs, key)
	rp := startRelayProc(t, dir, "relay.opts")

	in := filepath.Join(dir, "big.7")
	writeFile(t, in, strings.Repeat("k-space!", 4<<20), 0o600) // 32 MiB
	const sid = "relay-killed"
	var once sync.Once
	// Progress runs in the send path: killing on its first call stops the
	// relay before the rest is sent (a later mark could come too late, as
	// Progress is throttled).
	kill := func(done, total int64) {
		if done > 0 && done < total {
			once.Do(func() {
				rp.cmd.Process.Kill()
				<-rp.done
				rp.exited = true
			})
		}
	}
	c, err := client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid, Progress: kill, Reconnects: -1}); err == nil {
		t.Fatal("a submission through a relay killed mid-upload succeeded")
	}
	c.Close()

	rp = startRelayProc(t, dir, "relay.opts")
	c, err = client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid})
	if err != nil {
		t.Fatalf("retry through the restarted relay: %v", err)
	}
	if j, err := c.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("retried job: %+v, %v", j, err)
	}
	n := 0
	for _, s := range backends {
		bc := s.Dial(t)
		q, err := bc.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range q {
			if j.SubmissionID == sid {
				n++
			}
		}
		servertest.Eventually(t, 20*time.Second, "no interrupted upload on "+s.Addr().String(), func() bool {
			m, _ := filepath.Glob(filepath.Join(s.Config.InputBaseDir, ".incoming-*"))
			return len(m) == 0
		})
	}
	if n != 1 {
		t.Errorf("submission %s is %d jobs on the backends, want 1", sid, n)
	}
}
