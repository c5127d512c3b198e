package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// watchProc is a running `recon watch` process.
type watchProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error // receives the exit once
}

// startWatch runs `recon watch --opts client.opts` in dir and waits until
// it says what it watches. It is killed when the test ends, if still
// running.
func startWatch(t *testing.T, ctx context.Context, dir string) *watchProc {
	t.Helper()
	cmd := exec.Command(reconBin, "watch", "--opts", "client.opts")
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &watchProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	exited := make(chan struct{})
	go func() { p.done <- cmd.Wait(); close(exited); pw.Close() }()
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			p.stderr.WriteString(sc.Text() + "\n")
			if !sent && strings.HasPrefix(sc.Text(), "recon watch ") && strings.Contains(sc.Text(), "watching ") {
				close(started)
				sent = true
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-started:
	case <-exited:
		t.Fatalf("recon watch exited at once:\n%s", p.stderr.String())
	case <-ctx.Done():
		t.Fatalf("recon watch did not start:\n%s", p.stderr.String())
	}
	return p
}

// wait waits for the process to exit and returns what Wait returned.
func (p *watchProc) wait(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		t.Fatalf("recon watch did not exit:\n%s", p.stderr.String())
		return nil
	}
}

type stateRow struct{ name, status, jobID string }

// watchState reads the groups of a stopped daemon's state database.
func watchState(t *testing.T, dir string) []stateRow {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(filepath.Join(dir, "watch.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name, status, job_id FROM groups ORDER BY id`)
	if err != nil {
		t.Fatalf("read watch state: %v", err)
	}
	defer rows.Close()
	var out []stateRow
	for rows.Next() {
		var r stateRow
		if err := rows.Scan(&r.name, &r.status, &r.jobID); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWatchStoppedMidJob stops a real `recon watch` process while its job
// runs on a real `recon server` — with SIGINT (a clean stop: exit status
// 0, the state saved) and with SIGKILL (no chance to save anything more) —
// then starts it again and lets the job finish: the server has exactly one
// job, the script ran once, and the results are downloaded once.
func TestWatchStoppedMidJob(t *testing.T) {
	for name, sig := range map[string]syscall.Signal{"SIGINT": syscall.SIGINT, "SIGKILL": syscall.SIGKILL} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			dir := t.TempDir()
			marks, release := filepath.Join(dir, "runs"), filepath.Join(dir, "RELEASE")
			if err := os.Mkdir(marks, 0o755); err != nil {
				t.Fatal(err)
			}
			// Each run of the script leaves a mark, then waits for RELEASE.
			script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
mktemp "`+marks+`/run.XXXXXX" >/dev/null
while [ ! -e "`+release+`" ]; do sleep 0.05; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`)
			key := serverOpts(t, dir, script)
			srv := startServer(t, dir, "recon.opts")
			watchOpts(t, dir, srv.clientAddr, key)
			scanner, logPath := filepath.Join(dir, "scanner"), filepath.Join(dir, "watch.log")
			if err := os.Mkdir(scanner, 0o755); err != nil {
				t.Fatal(err)
			}
			runs := func() int { m, _ := filepath.Glob(filepath.Join(marks, "run.*")); return len(m) }

			p := startWatch(t, ctx, dir)
			raw := strings.Repeat("k-space ", 4000)
			writeFile(t, filepath.Join(scanner, "P1.7"), raw, 0o644)
			servertest.Eventually(t, 40*time.Second, "job submitted and running", func() bool {
				return runs() == 1 && len(servertest.LogRecords(t, logPath, "group submitted")) == 1
			})
			jobID, _ := servertest.LogRecords(t, logPath, "group submitted")[0]["job_id"].(string)

			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := p.wait(t, ctx)
			if sig == syscall.SIGINT {
				if err != nil {
					t.Fatalf("recon watch after SIGINT: %v (want exit status 0)\n%s", err, p.stderr.String())
				}
				if !strings.Contains(p.stderr.String(), "recon watch: stopped") || len(servertest.LogRecords(t, logPath, "watch stopped")) != 1 {
					t.Errorf("no clean stop reported:\n%s", p.stderr.String())
				}
			} else {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("recon watch after SIGKILL: %v, want killed", err)
				}
			}
			// The state says the group waits for its job.
			if rows := watchState(t, filepath.Join(dir, "watch_state")); len(rows) != 1 || rows[0].status != "submitted" || rows[0].jobID != jobID {
				t.Fatalf("state after the stop: %+v, want one group submitted as job %s", rows, jobID)
			}

			p = startWatch(t, ctx, dir)
			writeFile(t, release, "", 0o644)
			summary, groupDir := waitWatchSummary(t, dir)
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(t, ctx); err != nil {
				t.Errorf("recon watch after SIGTERM: %v\n%s", err, p.stderr.String())
			}

			if summary.Status != "done" || summary.State != "succeeded" || summary.JobID != jobID || filepath.Base(groupDir) != summary.Group {
				t.Errorf("summary %+v in %s, want done with job %s", summary, groupDir, jobID)
			}
			if b, err := os.ReadFile(filepath.Join(groupDir, "P1.7.out")); err != nil || string(b) != raw {
				t.Errorf("result P1.7.out: %v (%d bytes)", err, len(b))
			}
			if dirs, _ := os.ReadDir(filepath.Join(dir, "downloads")); len(dirs) != 1 {
				t.Errorf("downloads hold %d entries, want the one group", len(dirs))
			}
			if n := runs(); n != 1 {
				t.Errorf("the script ran %d times, want 1", n)
			}
			for msg, want := range map[string]int{"group detected": 1, "group submitted": 1, "group done": 1} {
				if recs := servertest.LogRecords(t, logPath, msg); len(recs) != want {
					t.Errorf("%d %q records, want %d: %v", len(recs), msg, want, recs)
				}
			}
			if rows := watchState(t, filepath.Join(dir, "watch_state")); len(rows) != 1 || rows[0].status != "done" || rows[0].jobID != jobID {
				t.Errorf("state at the end: %+v, want one group done as job %s", rows, jobID)
			}
			q := runRecon(t, dir, "queue", "--opts", "client.opts", "--json")
			if n := strings.Count(q.stdout, `"job_id"`); n != 1 || !strings.Contains(q.stdout, jobID) {
				t.Errorf("server has %d jobs, want just %s:\n%s", n, jobID, q.stdout)
			}
		})
	}
}
