package server_test

// What the site's script does to a real server: fails, times out, cannot
// start, floods its stderr (docs/SECURITY.md, section 6).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestScriptStderrFlood links the process cases (docs/SECURITY.md) to a
// real server: a script writing 64 MiB to stderr fails the job with a
// bounded message, and the server goes on.
func TestScriptStderrFlood(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("head"); err != nil {
		t.Skip("no head")
	}
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: "#!/bin/sh\nhead -c 67108864 /dev/zero | tr '\\0' x >&2\nexit 7\n"})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || len(j.Error) > 8<<10 {
		t.Fatalf("job ended %s with a %d-byte error", j.State, len(j.Error))
	}
	if fi, err := os.Stat(s.LogPath); err != nil || fi.Size() > 32<<20 {
		t.Errorf("server log after a 64 MiB stderr: %v, %v", fi.Size(), err)
	}
	checkServes(t, ctx, s)
}

// TestScriptFails checks a script that exits 3 with a message.
func TestScriptFails(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
echo "starting" >&2
echo "reconstruction failed: k-space is truncated" >&2
exit 3
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "failed" {
		t.Fatalf("job ended %s, want failed", done.State)
	}
	if done.ExitCode == nil || *done.ExitCode != 3 {
		t.Errorf("exit code %v, want 3", done.ExitCode)
	}
	if !strings.Contains(done.Error, "reconstruction failed: k-space is truncated") || !strings.Contains(done.Error, "3") {
		t.Errorf("error %q, want the exit status and the stderr tail", done.Error)
	}
	waitGone(t, filepath.Join(s.Config.InputBaseDir, job.JobID), "the input dir of the failed job")
	// A failed job's outputs are removed when it fails (unless
	// KEEP_FAILED_OUTPUTS): a fetch says so.
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Fatalf("Fetch of the failed job: %v; want code gone", err)
	}
}

// TestScriptTimesOut checks that a script over JOB_TIMEOUT_SECONDS fails
// and that a background grandchild that ignores SIGTERM is ended too.
func TestScriptTimesOut(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	pidFile := filepath.Join(sig, "pid")
	s := servertest.Start(t, servertest.Options{
		Script: fmt.Sprintf(`#!/bin/sh
( trap '' TERM; exec sleep 300 ) &
echo $! > %[1]q.tmp
mv %[1]q.tmp %[1]q
sleep 300
`, pidFile),
		Extra: map[string]string{"JOB_TIMEOUT_SECONDS": "1"},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))

	var pid int
	servertest.Eventually(t, pollTimeout, "grandchild writes its pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file %q: %v", b, err)
		}
		return true
	})
	t.Cleanup(func() {
		if !processGone(pid) {
			// Do not leave it behind if the test failed.
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	done := waitDone(t, ctx, c, job.JobID)
	if done.State != "failed" || !strings.Contains(done.Error, "timed out") {
		t.Fatalf("job ended %s (%q), want failed with a timeout", done.State, done.Error)
	}
	servertest.Eventually(t, 10*time.Second, fmt.Sprintf("grandchild %d ends", pid), func() bool {
		return processGone(pid)
	})
}

// TestScriptCannotStart checks that a script that cannot be executed
// fails the job without showing server paths to the client, and that the
// server goes on once it is fixed.
func TestScriptCannotStart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	if err := os.Chmod(s.Config.ScriptPath, 0o644); err != nil {
		t.Fatal(err)
	}
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "script") {
		t.Fatalf("job ended %s (%q), want failed", j.State, j.Error)
	}
	if strings.Contains(j.Error, s.Dir) || strings.Contains(j.Error, s.Config.ScriptPath) {
		t.Errorf("job error %q shows a server path", j.Error)
	}
	waitGone(t, filepath.Join(s.Config.InputBaseDir, job.JobID), "the input dir of the failed job")
	if err := os.Chmod(s.Config.ScriptPath, 0o755); err != nil {
		t.Fatal(err)
	}
	job = submitOne(t, ctx, c, "P2.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job after fixing the script ended %s (%q)", j.State, j.Error)
	}
}
