package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// errNoRoute is returned by the route store for a job or submission it does
// not know.
var errNoRoute = errors.New("no route")

// routeMigrations[i] brings the schema from version i to i+1 (see
// sqlitedb.Open). Append, never edit.
var routeMigrations = [...]string{
	// 0 → 1: which backend holds which job, and which backend a submission
	// id was last sent to (so a retried submission reaches the same one).
	`CREATE TABLE routes (
		job_id     TEXT    PRIMARY KEY,
		backend    TEXT    NOT NULL,
		created_at INTEGER NOT NULL
	) STRICT;
	CREATE TABLE submissions (
		submission_id TEXT    PRIMARY KEY,
		backend       TEXT    NOT NULL,
		created_at    INTEGER NOT NULL
	) STRICT;`,
	// 1 → 2: whether the last file of a submission was handed to its
	// backend (so the backend may have made a job of it). Rows from
	// before are taken as handed over: the safe assumption.
	`ALTER TABLE submissions ADD COLUMN handed_over INTEGER NOT NULL DEFAULT 1;`,
	// 2 → 3: the client identity a job was placed or found for, so that
	// another identity's request about it is not told where it is ('':
	// a route from before identities).
	`ALTER TABLE routes ADD COLUMN identity TEXT NOT NULL DEFAULT '';`,
}

// routeStore is the relay's durable map from job id to backend address:
// one SQLite database in WAL mode with synchronous=FULL, so a route is on
// stable storage when put returns. Safe for concurrent use; writes are
// serialised on one connection.
type routeStore struct {
	db *sql.DB
}

func openRoutes(path string) (*routeStore, error) {
	db, err := sqlitedb.Open(context.Background(), path, routeMigrations[:])
	if err != nil {
		return nil, err
	}
	return &routeStore{db: db}, nil
}

func (s *routeStore) Close() error { return s.db.Close() }

// putJob records that backend holds job id of identity; it is committed
// when putJob returns.
func (s *routeStore) putJob(ctx context.Context, id, backend, identity string) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO routes (job_id, backend, created_at, identity) VALUES (?, ?, ?, ?)
		 ON CONFLICT (job_id) DO UPDATE SET backend = excluded.backend, identity = excluded.identity`,
		id, backend, time.Now().UnixNano(), identity)
	if err != nil {
		return fmt.Errorf("record route of job %s: %w", id, err)
	}
	return nil
}

// job returns the backend holding job id and the identity it was put for
// ("" for a route from before identities), or errNoRoute.
func (s *routeStore) job(ctx context.Context, id string) (backend, identity string, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT backend, identity FROM routes WHERE job_id = ?`, id).Scan(&backend, &identity)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", errNoRoute
	}
	if err != nil {
		return "", "", fmt.Errorf("look up route of job %s: %w", id, err)
	}
	return backend, identity, nil
}

// putSubmission records that submission sid is being sent to backend.
// Sent to another backend than before, it starts as not handed over; sent
// again to the same backend, it keeps what it was (that backend may
// already hold the job).
func (s *routeStore) putSubmission(ctx context.Context, sid, backend string) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO submissions (submission_id, backend, created_at, handed_over) VALUES (?, ?, ?, 0)
		 ON CONFLICT (submission_id) DO UPDATE SET
		   handed_over = CASE WHEN submissions.backend = excluded.backend THEN submissions.handed_over ELSE 0 END,
		   backend = excluded.backend, created_at = excluded.created_at`,
		sid, backend, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("record submission: %w", err)
	}
	return nil
}

// handOver records, before the last file's end is sent to backend, that
// from now on backend may make a job of submission sid: a retry must then
// go to that backend only, never to another. It is committed when
// handOver returns.
func (s *routeStore) handOver(ctx context.Context, sid, backend string) error {
	_, err := s.db.ExecContext(ctx,
		`UPDATE submissions SET handed_over = 1 WHERE submission_id = ? AND backend = ?`, sid, backend)
	if err != nil {
		return fmt.Errorf("record submission handed over: %w", err)
	}
	return nil
}

// submission returns the backend submission sid was last sent to, and
// whether its last file was handed over there; or errNoRoute.
func (s *routeStore) submission(ctx context.Context, sid string) (backend string, handedOver bool, err error) {
	var h int64
	err = s.db.QueryRowContext(ctx, `SELECT backend, handed_over FROM submissions WHERE submission_id = ?`, sid).Scan(&backend, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, errNoRoute
	}
	if err != nil {
		return "", false, fmt.Errorf("look up submission: %w", err)
	}
	return backend, h != 0, nil
}

// count returns the number of routes, for status.
func (s *routeStore) count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM routes`).Scan(&n)
	return n, err
}
