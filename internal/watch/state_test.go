package watch

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// stateV1 is the watch state's schema at version 1, as the daemon wrote
// it before it opened through sqlitedb, with one submitted group of one
// file. A copy on purpose: a change to the migrations must not change
// what the test opens.
const stateV1 = `CREATE TABLE groups (
		id            INTEGER PRIMARY KEY AUTOINCREMENT,
		name          TEXT    NOT NULL UNIQUE,
		status        TEXT    NOT NULL CHECK (status IN ('pending', 'submitted', 'done', 'failed')),
		attempt       INTEGER NOT NULL DEFAULT 1,
		submission_id TEXT    NOT NULL DEFAULT '',
		job_id        TEXT    NOT NULL DEFAULT '',
		job_state     TEXT    NOT NULL DEFAULT '',
		error         TEXT    NOT NULL DEFAULT '',
		earlier_jobs  TEXT    NOT NULL DEFAULT '',
		detected_at   INTEGER NOT NULL,
		submitted_at  INTEGER,
		finished_at   INTEGER
	) STRICT;
	CREATE INDEX groups_status ON groups (status, id);
	CREATE TABLE files (
		group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
		path     TEXT    NOT NULL,
		size     INTEGER NOT NULL,
		mtime    INTEGER NOT NULL,
		sha256   TEXT    NOT NULL DEFAULT '',
		PRIMARY KEY (path, size, mtime)
	) STRICT;
	CREATE INDEX files_group ON files (group_id);
	PRAGMA user_version = 1;`

// writeOldState writes a state database in dir the way the daemon did
// before it opened through sqlitedb, running the statements given.
func writeOldState(t *testing.T, dir, stmts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, stateFileName)+
		"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmts); err != nil {
		t.Fatal(err)
	}
}

// TestStateFromOlderDaemon: a state database written by the daemon before
// it opened through sqlitedb opens with its groups and files, still knows
// its files, and is durable (WAL, synchronous=FULL, foreign keys on).
func TestStateFromOlderDaemon(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "state")
	detected := time.Unix(1_700_000_000, 0)
	submitted := detected.Add(time.Minute)
	mtime := detected.Add(-time.Second)
	writeOldState(t, dir, stateV1+fmt.Sprintf(`
		INSERT INTO groups (name, status, submission_id, job_id, job_state, detected_at, submitted_at)
			VALUES ('scan', 'submitted', 'sid', 'job', 'queued', %d, %d);
		INSERT INTO files (group_id, path, size, mtime, sha256) VALUES (1, '/data/scan.dat', 3, %d, 'ab');`,
		detected.UnixNano(), submitted.UnixNano(), mtime.UnixNano()))

	s, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	got, err := s.groups(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []Group{{
		ID: 1, Name: "scan", Status: StatusSubmitted, Attempt: 1, SubmissionID: "sid", JobID: "job", JobState: "queued",
		DetectedAt: detected, SubmittedAt: submitted,
		Files: []File{{Path: "/data/scan.dat", Size: 3, ModTime: mtime, SHA256: "ab"}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("groups written by the old daemon (-want +got):\n%s", diff)
	}
	if known, err := s.known(ctx, "/data/scan.dat", 3, mtime); err != nil || !known {
		t.Errorf("known = %v, %v; want true", known, err)
	}
	if err := sqlitedb.Verify(ctx, s.db); err != nil {
		t.Error(err)
	}
}

// TestStateRefusesNewer: a state database from a newer daemon is refused,
// and the lock is released so that the newer daemon can still run.
func TestStateRefusesNewer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	writeOldState(t, dir, stateV1+`PRAGMA user_version = 2;`)
	s, err := openState(dir)
	if err == nil {
		s.close()
	}
	if !errors.Is(err, sqlitedb.ErrNewerSchema) {
		t.Fatalf("openState of a version 2 database = %v, want ErrNewerSchema", err)
	}
	lock, err := lockFile(filepath.Join(dir, lockFileName))
	if err != nil {
		t.Fatalf("lock after the refusal: %v", err)
	}
	lock.Close()
}
