package jobs_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/sqlitedb"
)

// schemaV1 is the job store's schema at version 1, as recon wrote it
// before the store opened through sqlitedb. It is a copy on purpose: a
// change to the migrations must not change what this test opens.
const schemaV1 = `CREATE TABLE jobs (
		seq                INTEGER PRIMARY KEY AUTOINCREMENT,
		id                 TEXT    NOT NULL UNIQUE,
		submission_id      TEXT    UNIQUE,
		state              TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
		files              TEXT    NOT NULL,
		options            TEXT    NOT NULL,
		client_addr        TEXT    NOT NULL,
		submitted_at       INTEGER NOT NULL,
		started_at         INTEGER,
		finished_at        INTEGER,
		attempts           INTEGER NOT NULL DEFAULT 0,
		exit_code          INTEGER,
		error              TEXT    NOT NULL DEFAULT '',
		results            TEXT,
		delivered_at       INTEGER,
		results_removed_at INTEGER
	) STRICT;
	CREATE INDEX jobs_state_seq ON jobs (state, seq);
	CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
	PRAGMA user_version = 1;`

// TestOpenVersion1Store: a store file written before the shared opener,
// with a job in it, opens, keeps the job and takes new ones.
func TestOpenVersion1Store(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	old, err := sql.Open("sqlite", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL")
	if err != nil {
		t.Fatal(err)
	}
	id := jobs.NewID()
	submitted := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_, err = old.Exec(schemaV1)
	if err == nil {
		_, err = old.Exec(`INSERT INTO jobs (id, submission_id, state, files, options, client_addr, submitted_at, attempts)
			VALUES (?, 'sub-1', 'queued', '[{"name":"meas.dat","size":3,"sha256":"ab"}]', '{"k":"v"}', '192.0.2.1:4000', ?, 1)`,
			id, submitted.UnixNano())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, path)
	got := mustGet(t, s, id)
	want := &jobs.Job{
		ID:           id,
		Identity:     "default",
		SubmissionID: "sub-1",
		State:        jobs.Queued,
		Files:        []jobs.File{{Name: "meas.dat", Size: 3, SHA256: "ab"}},
		Options:      map[string]string{"k": "v"},
		ClientAddr:   "192.0.2.1:4000",
		SubmittedAt:  submitted,
		Attempts:     1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("job written by the old store (-want +got):\n%s", diff)
	}
	if j, created, err := s.Create(t.Context(), &jobs.Job{Identity: "default", SubmissionID: "sub-1"}); err != nil || created || j.ID != want.ID {
		t.Errorf("Create with the old job's submission id = %v, %v, %v; want the old job", j, created, err)
	}
	// Another identity's equal submission id is another job.
	other := mustCreate(t, s, &jobs.Job{Identity: "b", SubmissionID: "sub-1"})
	if other.ID == id {
		t.Error("identity b got default's job by its submission id")
	}
	mustCreate(t, s, &jobs.Job{Identity: "default", SubmissionID: "sub-2"})
	if n, err := s.QueuedCount(t.Context()); err != nil || n != 3 {
		t.Errorf("QueuedCount = %d, %v; want 3", n, err)
	}
	// The old job keeps its place at the head of the queue.
	if pos, err := s.QueuePosition(t.Context(), id); err != nil || pos != 1 {
		t.Errorf("QueuePosition of the old job = %d, %v; want 1", pos, err)
	}
	if pos, err := s.QueuePositions(t.Context(), "b"); err != nil || pos[other.ID] != 2 || len(pos) != 1 {
		t.Errorf("QueuePositions(b) = %v, %v; want %s at 2", pos, err, other.ID)
	}
}

// TestOpenRefusesNewerSchemaSentinel: the refusal of a newer store is the
// opener's ErrNewerSchema, which callers can tell from other failures.
func TestOpenRefusesNewerSchemaSentinel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaV1 + `PRAGMA user_version = 1000;`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := jobs.Open(path)
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, sqlitedb.ErrNewerSchema) {
		t.Errorf("Open of a version 1000 store = %v, want ErrNewerSchema", err)
	}
}
