package watch

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// Group statuses, in the order a group goes through them.
const (
	StatusPending   = "pending"   // closed and recorded; to be submitted
	StatusSubmitted = "submitted" // the server has the job: waiting for it, then downloading
	StatusDone      = "done"      // the job succeeded and its results are downloaded
	StatusFailed    = "failed"    // the job failed, was cancelled, or could not be submitted
)

// Group is a set of files submitted as one job, as the state records it.
type Group struct {
	ID           int64     `json:"-"`
	Name         string    `json:"group"`
	Status       string    `json:"status"`
	Attempt      int       `json:"attempt"`
	SubmissionID string    `json:"submission_id,omitempty"`
	JobID        string    `json:"job_id,omitempty"`
	JobState     string    `json:"state,omitempty"`
	Error        string    `json:"error,omitempty"`
	EarlierJobs  []string  `json:"earlier_job_ids,omitempty"` // jobs of earlier, failed attempts
	DetectedAt   time.Time `json:"detected_at"`
	SubmittedAt  time.Time `json:"submitted_at,omitzero"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
	Files        []File    `json:"files"`
}

// File is a raw-data file of a group: its absolute path, and the size and
// modification time it had when it was found complete. SHA256 is set once
// the file has been read for submission.
type File struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256,omitempty"`
}

// stateFileName is the database in the state directory; lockFileName is
// the file whose lock keeps a second daemon off the same state.
const (
	stateFileName = "watch.db"
	lockFileName  = "watch.lock"
)

// migrations[i] brings the schema from version i to i+1 (see
// sqlitedb.Open). Append, never edit.
var migrations = [...]string{
	// Times are Unix nanoseconds, NULL while not yet. A file (path, size,
	// mtime) belongs to at most one group: that is what "already handled"
	// means.
	`CREATE TABLE groups (
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
	CREATE INDEX files_group ON files (group_id);`,
}

// state is the daemon's durable state: one SQLite database (WAL,
// synchronous=FULL), so every method that changes it has committed the
// change to stable storage when it returns. Safe for concurrent use.
type state struct {
	db   *sql.DB
	lock *os.File
}

// openState opens (creating if needed) the state in dir and locks it
// against a second daemon.
func openState(dir string) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	lock, err := lockFile(filepath.Join(dir, lockFileName))
	if err != nil {
		return nil, err
	}
	db, err := sqlitedb.Open(context.Background(), filepath.Join(dir, stateFileName), migrations[:])
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("state database: %w", err)
	}
	return &state{db: db, lock: lock}, nil
}

func (s *state) close() error {
	err := s.db.Close()
	return errors.Join(err, s.lock.Close())
}

func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64)
}

// known reports whether a file with this path, size and mtime is in a
// recorded group.
func (s *state) known(ctx context.Context, path string, size int64, mtime time.Time) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM files WHERE path = ? AND size = ? AND mtime = ?`,
		path, size, mtime.UnixNano()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// addGroup records a closed group as pending. The name is made unique with
// a -2, -3… suffix if need be; the recorded group is returned.
func (s *state) addGroup(ctx context.Context, name string, files []File, at time.Time) (*Group, error) {
	ctx = context.WithoutCancel(ctx) // a change in hand is saved even while stopping
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	unique := name
	for i := 2; ; i++ {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM groups WHERE name = ?`, unique).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, err
		}
		unique = fmt.Sprintf("%s-%d", name, i)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO groups (name, status, detected_at) VALUES (?, ?, ?)`,
		unique, StatusPending, at.UnixNano())
	if err != nil {
		return nil, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO files (group_id, path, size, mtime) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return nil, err
	}
	defer ins.Close()
	for _, f := range files {
		if _, err := ins.ExecContext(ctx, id, f.Path, f.Size, f.ModTime.UnixNano()); err != nil {
			return nil, fmt.Errorf("record %s: %w", f.Path, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return &Group{ID: id, Name: unique, Status: StatusPending, Attempt: 1, DetectedAt: at, Files: files}, nil
}

const groupColumns = `id, name, status, attempt, submission_id, job_id, job_state, error, earlier_jobs,
	detected_at, submitted_at, finished_at`

type rowScanner interface{ Scan(...any) error }

func scanGroup(r rowScanner) (*Group, error) {
	var g Group
	var earlier string
	var detected int64
	var submitted, finished sql.NullInt64
	if err := r.Scan(&g.ID, &g.Name, &g.Status, &g.Attempt, &g.SubmissionID, &g.JobID, &g.JobState, &g.Error,
		&earlier, &detected, &submitted, &finished); err != nil {
		return nil, err
	}
	if earlier != "" {
		g.EarlierJobs = strings.Fields(earlier)
	}
	g.DetectedAt = time.Unix(0, detected)
	g.SubmittedAt = fromNanos(submitted)
	g.FinishedAt = fromNanos(finished)
	return &g, nil
}

func (s *state) files(ctx context.Context, g *Group) error {
	rows, err := s.db.QueryContext(ctx, `SELECT path, size, mtime, sha256 FROM files WHERE group_id = ? ORDER BY mtime, path`, g.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	g.Files = g.Files[:0]
	for rows.Next() {
		var f File
		var mt int64
		if err := rows.Scan(&f.Path, &f.Size, &mt, &f.SHA256); err != nil {
			return err
		}
		f.ModTime = time.Unix(0, mt)
		g.Files = append(g.Files, f)
	}
	return rows.Err()
}

// next returns the oldest group with the status, with its files, or nil.
func (s *state) next(ctx context.Context, status string) (*Group, error) {
	g, err := scanGroup(s.db.QueryRowContext(ctx,
		`SELECT `+groupColumns+` FROM groups WHERE status = ? ORDER BY id LIMIT 1`, status))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return g, s.files(ctx, g)
}

// groups returns every group, oldest first, with its files if withFiles.
func (s *state) groups(ctx context.Context, withFiles bool) ([]Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+groupColumns+` FROM groups ORDER BY id`)
	if err != nil {
		return nil, err
	}
	var out []Group
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, *g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if !withFiles {
			break
		}
		if err := s.files(ctx, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// prepared records the files' hashes and the submission id, and forgets
// the files of the group that changed or vanished (they will be found
// again as new files).
func (s *state) prepared(ctx context.Context, id int64, files, dropped []File, submissionID string) error {
	ctx = context.WithoutCancel(ctx) // a change in hand is saved even while stopping
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, f := range dropped {
		if _, err := tx.ExecContext(ctx, `DELETE FROM files WHERE group_id = ? AND path = ? AND size = ? AND mtime = ?`,
			id, f.Path, f.Size, f.ModTime.UnixNano()); err != nil {
			return err
		}
	}
	upd, err := tx.PrepareContext(ctx, `UPDATE files SET sha256 = ? WHERE group_id = ? AND path = ? AND size = ? AND mtime = ?`)
	if err != nil {
		return err
	}
	defer upd.Close()
	for _, f := range files {
		if _, err := upd.ExecContext(ctx, f.SHA256, id, f.Path, f.Size, f.ModTime.UnixNano()); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE groups SET submission_id = ? WHERE id = ?`, submissionID, id); err != nil {
		return err
	}
	return tx.Commit()
}

// submitted records the job the server made of a pending group.
func (s *state) submitted(ctx context.Context, id int64, jobID, jobState string, at time.Time) error {
	return s.exec(ctx, `UPDATE groups SET status = ?, job_id = ?, job_state = ?, submitted_at = ? WHERE id = ? AND status = ?`,
		StatusSubmitted, jobID, jobState, at.UnixNano(), id, StatusPending)
}

// finish ends a group: done or failed, with the job's last state and an
// error for a failed group.
func (s *state) finish(ctx context.Context, id int64, status, jobState, msg string, at time.Time) error {
	return s.exec(ctx, `UPDATE groups SET status = ?, job_state = ?, error = ?, finished_at = ? WHERE id = ?`,
		status, jobState, msg, at.UnixNano(), id)
}

// retry puts a group whose job failed back to pending for another attempt,
// remembering the failed job.
func (s *state) retry(ctx context.Context, id int64, msg string) error {
	return s.exec(ctx, `UPDATE groups SET status = ?, attempt = attempt + 1, earlier_jobs = trim(earlier_jobs || ' ' || job_id),
		job_id = '', job_state = '', submission_id = '', submitted_at = NULL, error = ? WHERE id = ? AND status = ?`,
		StatusPending, msg, id, StatusSubmitted)
}

func (s *state) exec(ctx context.Context, q string, args ...any) error {
	ctx = context.WithoutCancel(ctx) // a change in hand is saved even while stopping
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("state: %d rows changed, want 1", n)
	}
	return nil
}
