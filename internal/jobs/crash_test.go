package jobs_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/recon-mri/recon/internal/jobs"
)

// crashChildEnv names the environment variable that turns the test binary,
// re-executed by TestCrashDurability, into the crashing child. Its value is
// the database path.
const crashChildEnv = "RECON_JOBS_CRASH_CHILD_DB"

// crashChildJobs is how many jobs the child reports created before it
// kills itself, while its creators are still running.
const crashChildJobs = 60

// TestCrashDurability checks that every job whose Create returned is in
// the database after the process that created it dies by SIGKILL in the
// middle of other commits, without closing the store; and that jobs it had
// claimed are running and come back to the queue with Recover.
func TestCrashDurability(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "jobs.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Exited() {
		t.Fatalf("child: %v, want death by signal\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}

	var created, claimed []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		kind, id, ok := strings.Cut(sc.Text(), " ")
		switch {
		case ok && kind == "created":
			created = append(created, id)
		case ok && kind == "claimed":
			claimed = append(claimed, id)
		default:
			t.Fatalf("child printed %q\nstderr:\n%s", sc.Text(), stderr.Bytes())
		}
	}
	if len(created) < crashChildJobs || len(claimed) != 2 {
		t.Fatalf("child reported %d created and %d claimed jobs, want ≥ %d and 2\nstderr:\n%s",
			len(created), len(claimed), crashChildJobs, stderr.Bytes())
	}

	// The database file is sound.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v; want ok", check, err)
	}
	db.Close()

	s := openStore(t, path)
	for _, id := range created {
		if _, err := s.Get(t.Context(), id); err != nil {
			t.Errorf("job %s, reported created before the crash: %v", id, err)
		}
	}
	for _, id := range claimed {
		if j, err := s.Get(t.Context(), id); err != nil || j.State != jobs.Running {
			t.Errorf("job %s, claimed before the crash: %v, %v; want running", id, j, err)
		}
	}
	requeued, failed, err := s.Recover(t.Context(), 3)
	if err != nil || len(failed) != 0 || strings.Join(requeued, " ") != strings.Join(claimed, " ") {
		t.Errorf("Recover = %v, %v, %v; want %v requeued", requeued, failed, err, claimed)
	}
	if pos, err := s.QueuePosition(t.Context(), claimed[0]); err != nil || pos != 1 {
		t.Errorf("QueuePosition(first claimed) = %d, %v; want 1", pos, err)
	}
	t.Logf("store holds %d jobs after SIGKILL; the child reported %d created", mustQueued(t, s), len(created))
}

func mustQueued(t *testing.T, s *jobs.Store) int {
	n, err := s.QueuedCount(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// crashChild creates jobs from several goroutines, printing each id once
// Create has returned, and SIGKILLs its own process after crashChildJobs,
// with Creates still in flight. It never returns.
func crashChild(path string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := jobs.Open(path)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	// Two jobs first, claimed: they are running when the process dies.
	for range 2 {
		if _, _, err := s.Create(ctx, &jobs.Job{}); err != nil {
			fail(err)
		}
	}
	for range 2 {
		j, err := s.Claim(ctx)
		if err != nil {
			fail(err)
		}
		fmt.Println("created", j.ID)
		fmt.Println("claimed", j.ID)
	}

	var mu sync.Mutex
	reported := 0
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				j, _, err := s.Create(ctx, &jobs.Job{SubmissionID: fmt.Sprintf("w%d-%d", w, i)})
				if err != nil {
					fail(err)
				}
				mu.Lock()
				// One write(2) per line: a line is whole or absent.
				fmt.Println("created", j.ID)
				reported++
				if reported == crashChildJobs {
					p, err := os.FindProcess(os.Getpid())
					if err == nil {
						err = p.Kill() // SIGKILL: no deferred code, no Close
					}
					if err != nil {
						fail(fmt.Errorf("kill self: %v", err))
					}
					select {} // until the signal lands
				}
				mu.Unlock()
			}
		}()
	}
	select {}
}
