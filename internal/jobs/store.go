package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// DefaultListLimit is the number of jobs List returns when
// ListOptions.Limit is zero or negative.
const DefaultListLimit = 1000

// maxReaders is how many connections the store reads on at once.
const maxReaders = 4

// Store is the durable job store: one SQLite database file in WAL mode with
// synchronous=FULL, so that every method that changes a job has committed
// the change to stable storage before it returns.
//
// All methods are safe for concurrent use. Writes go through a single
// connection, one transaction at a time (BEGIN IMMEDIATE), which makes
// every read-check-write in a method atomic with respect to every other
// writer, in this process or another. Reads use a separate small pool and
// see every change committed before they start.
//
// One process at a time should run jobs from a store: Recover assumes that
// a job in state running is not running anywhere.
//
// The store does not compete with other files for the last bytes of its
// disk: it keeps a reserve file of ReserveBytes beside the database, which
// it deletes to retry a write that failed on a full disk (see
// ReserveBytes), and creates again once the disk has room.
type Store struct {
	w       *sql.DB // the writer: exactly one connection
	r       *sql.DB // readers
	stmts   stmtCache
	now     func() time.Time
	reserve *reserve
}

// Open opens the job store at path, creating the file (mode 0600) and its
// parent directories (mode 0700) when missing, and creating or migrating the
// schema. It fails on a database written by a newer, unknown schema version.
// Open does not change any job: call Recover after it when starting a
// server. The caller must Close the store.
//
// On a disk with less free space than ReserveBytes, Open first deletes the
// store's reserve file, so that it opens, and Recover commits, on a full
// disk.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open job store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open job store: %w", err)
	}
	s := &Store{now: time.Now, reserve: openReserve(abs+ReserveSuffix, ReserveBytes)}
	s.reserve.releaseIfTight()
	ctx := context.Background()
	s.w, err = sqlitedb.Open(ctx, abs, migrations[:])
	if diskFull(err) {
		s.reserve.release()
		s.w, err = sqlitedb.Open(ctx, abs, migrations[:])
	}
	if err != nil {
		return nil, fmt.Errorf("open job store: %w", err)
	}
	if s.r, err = sqlitedb.OpenReaders(ctx, abs, maxReaders); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open job store: %w", err)
	}
	s.reserve.restore() // a store without its reserve still works
	return s, nil
}

// Close closes the store. Methods called after Close fail.
func (s *Store) Close() error {
	// Readers first: the writer, closing last, checkpoints the log into
	// the database file.
	return errors.Join(s.stmts.close(), s.r.Close(), s.w.Close())
}

// jobColumns is the column list every query that returns jobs selects, in
// the order scanJob reads.
const jobColumns = `id, identity, submission_id, state, files, options, client_addr,
	submitted_at, started_at, finished_at, attempts, exit_code, error,
	results, delivered_at, results_removed_at`

type scanner interface{ Scan(dest ...any) error }

func scanJob(row scanner) (*Job, error) {
	var (
		j                                     Job
		sid, results                          sql.NullString
		files, options                        string
		submitted                             int64
		started, finished, delivered, removed sql.NullInt64
		exit                                  sql.NullInt64
	)
	err := row.Scan(&j.ID, &j.Identity, &sid, &j.State, &files, &options, &j.ClientAddr,
		&submitted, &started, &finished, &j.Attempts, &exit, &j.Error,
		&results, &delivered, &removed)
	if err != nil {
		return nil, err
	}
	j.SubmissionID = sid.String
	j.SubmittedAt = time.Unix(0, submitted).UTC()
	j.StartedAt = timeFromDB(started)
	j.FinishedAt = timeFromDB(finished)
	j.DeliveredAt = timeFromDB(delivered)
	j.ResultsRemovedAt = timeFromDB(removed)
	if exit.Valid {
		c := int(exit.Int64)
		j.ExitCode = &c
	}
	if err := json.Unmarshal([]byte(files), &j.Files); err != nil {
		return nil, fmt.Errorf("job %q: decode files: %w", j.ID, err)
	}
	if err := json.Unmarshal([]byte(options), &j.Options); err != nil {
		return nil, fmt.Errorf("job %q: decode options: %w", j.ID, err)
	}
	if results.Valid {
		if err := json.Unmarshal([]byte(results.String), &j.Results); err != nil {
			return nil, fmt.Errorf("job %q: decode results: %w", j.ID, err)
		}
	}
	return &j, nil
}

func scanJobs(rows *sql.Rows, err error) ([]*Job, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// timeToDB returns t as Unix nanoseconds, or NULL for the zero time.
func timeToDB(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func timeFromDB(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// queryNanos returns t as Unix nanoseconds for comparing with stored
// times, clamped to the range the store keeps (UnixNano is undefined far
// outside it).
func queryNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return maxTime.UnixNano()
	}
	return t.UnixNano()
}

// nullIfEmpty stores an empty string as NULL.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func marshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// write runs fn in one write transaction and commits it. The change is on
// stable storage when write returns nil. When the disk is full, write
// releases the store's reserve and runs fn again in a new transaction: fn
// must not keep state from one run to the next. After a write, a released
// reserve is created again when the disk has room.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	err := s.writeOnce(ctx, fn)
	if diskFull(err) {
		s.reserve.release()
		err = s.writeOnce(ctx, fn)
	}
	if err == nil {
		s.reserve.restore() // a store without its reserve still works
	}
	return err
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.begin(ctx, s.w, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// stateOf returns the current state of job id inside tx.
func (s *Store) stateOf(ctx context.Context, tx *sql.Tx, id string) (State, error) {
	var st State
	err := s.txQueryRow(ctx, tx, "SELECT state FROM jobs WHERE id = ?", id).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return st, err
}

// earliest and latest times the store can keep (Unix nanoseconds in an
// int64), with a margin.
var (
	minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Create adds a new queued job, committed to stable storage before Create
// returns, and returns it as stored with created=true.
//
// Only the submission fields of j are read: ID (a fresh NewID when empty;
// otherwise it must satisfy ValidID and be unused, else ErrExists),
// Identity, SubmissionID, Files, Options, ClientAddr and SubmittedAt (now
// when zero).
// The new job has State queued and every other field zero. j itself is not
// modified.
//
// When j.SubmissionID is not empty and a job of the same identity with that
// submission id already exists, Create changes nothing and returns the existing job with
// created=false, whatever its state: a retried submission gets the job of
// the first. This holds under concurrent callers, in this process or
// another.
func (s *Store) Create(ctx context.Context, j *Job) (job *Job, created bool, err error) {
	if j == nil {
		return nil, false, errors.New("create job: nil job")
	}
	id := j.ID
	if id == "" {
		id = NewID()
	} else if !ValidID(id) {
		return nil, false, fmt.Errorf("create job: invalid job id %q", id)
	}
	submitted := j.SubmittedAt
	if submitted.IsZero() {
		submitted = s.now()
	}
	if submitted.Before(minTime) || submitted.After(maxTime) {
		return nil, false, fmt.Errorf("create job %q: submission time %v out of range", id, submitted)
	}
	files, err := marshal(j.Files)
	if err != nil {
		return nil, false, fmt.Errorf("create job %q: encode files: %w", id, err)
	}
	options, err := marshal(j.Options)
	if err != nil {
		return nil, false, fmt.Errorf("create job %q: encode options: %w", id, err)
	}

	err = s.write(ctx, func(tx *sql.Tx) error {
		job, created = nil, false
		if j.SubmissionID != "" {
			job, err = scanJob(s.txQueryRow(ctx, tx,
				"SELECT "+jobColumns+" FROM jobs WHERE identity = ? AND submission_id = ?", j.Identity, j.SubmissionID))
			if err == nil {
				return nil // created stays false
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		var n int
		if err := s.txQueryRow(ctx, tx, "SELECT count(*) FROM jobs WHERE id = ?", id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrExists
		}
		job, err = scanJob(s.txQueryRow(ctx, tx, `INSERT INTO jobs
			(id, identity, submission_id, state, files, options, client_addr, submitted_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			RETURNING `+jobColumns,
			id, j.Identity, nullIfEmpty(j.SubmissionID), Queued, files, options, j.ClientAddr, submitted.UnixNano()))
		if err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create job %q: %w", id, err)
	}
	return job, created, nil
}

// Get returns the job with the given id, or an error matching ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Job, error) {
	j, err := scanJob(s.queryRow(ctx, "SELECT "+jobColumns+" FROM jobs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %q: %w", id, err)
	}
	return j, nil
}

// GetBySubmission returns the job identity created with the given
// non-empty submission id, or an error matching ErrNotFound.
func (s *Store) GetBySubmission(ctx context.Context, identity, submissionID string) (*Job, error) {
	if submissionID == "" {
		return nil, fmt.Errorf("get job by submission id %q: %w", submissionID, ErrNotFound)
	}
	j, err := scanJob(s.queryRow(ctx,
		"SELECT "+jobColumns+" FROM jobs WHERE identity = ? AND submission_id = ?", identity, submissionID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get job by submission id %q: %w", submissionID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job by submission id %q: %w", submissionID, err)
	}
	return j, nil
}

// Claim moves the oldest queued job to running (Attempts+1, StartedAt now)
// and returns it, or returns ErrNoJob when no job is queued. Concurrent
// callers never get the same job, and jobs are handed out in queue order.
func (s *Store) Claim(ctx context.Context) (*Job, error) {
	var j *Job
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		j, err = scanJob(s.txQueryRow(ctx, tx, `UPDATE jobs
			SET state = ?, attempts = attempts + 1, started_at = ?
			WHERE seq = (SELECT seq FROM jobs WHERE state = ? ORDER BY seq LIMIT 1)
			RETURNING `+jobColumns,
			Running, s.now().UnixNano(), Queued))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNoJob
		}
		return err
	})
	if errors.Is(err, ErrNoJob) {
		return nil, ErrNoJob
	}
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	return j, nil
}

// Finish ends a running job: it moves to state (succeeded, failed or
// cancelled) with FinishedAt now and the given exit code (nil when the
// script never finished), error message and result manifest. A job that is
// not running gives an error matching ErrState (a *StateError), as does a
// state that is not terminal; an unknown id gives ErrNotFound.
func (s *Store) Finish(ctx context.Context, id string, state State, exitCode *int, errMsg string, results []File) error {
	if !state.Terminal() {
		return fmt.Errorf("finish job %q: %w: %q is not a final state", id, ErrState, state)
	}
	res, err := marshal(results)
	if err != nil {
		return fmt.Errorf("finish job %q: encode results: %w", id, err)
	}
	var exit any
	if exitCode != nil {
		exit = int64(*exitCode)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		st, err := s.stateOf(ctx, tx, id)
		if err != nil {
			return err
		}
		if st != Running {
			return &StateError{ID: id, From: st, To: state}
		}
		_, err = s.exec(ctx, tx, `UPDATE jobs
			SET state = ?, finished_at = ?, exit_code = ?, error = ?, results = ?
			WHERE id = ?`,
			state, s.now().UnixNano(), exit, errMsg, res, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("finish job %q: %w", id, err)
	}
	return nil
}

// Cancel cancels a job and returns the state it was in. A queued job
// becomes cancelled at once (prev = queued). A running job is left
// unchanged (prev = running): the caller stops its process and then calls
// Finish with Cancelled. A finished job gives an error matching ErrState,
// an unknown id ErrNotFound.
func (s *Store) Cancel(ctx context.Context, id string) (prev State, err error) {
	err = s.write(ctx, func(tx *sql.Tx) error {
		prev, err = s.stateOf(ctx, tx, id)
		if err != nil {
			return err
		}
		switch prev {
		case Queued:
			_, err = s.exec(ctx, tx, `UPDATE jobs
				SET state = ?, finished_at = ?, error = ?
				WHERE id = ?`,
				Cancelled, s.now().UnixNano(), "cancelled before it started", id)
			return err
		case Running:
			return nil
		}
		return &StateError{ID: id, From: prev, To: Cancelled}
	})
	if err != nil {
		return prev, fmt.Errorf("cancel job %q: %w", id, err)
	}
	return prev, nil
}

// Requeue puts a running job back in the queue at its original place, for
// a worker that stops mid-job (server shutdown). StartedAt is cleared, the
// start is not counted (Attempts goes back by one: an operator restarting
// the server is not the job's fault, and must not use up its
// MAX_JOB_ATTEMPTS), and errMsg is recorded as the job's Error to say why.
// A job that is not running gives an error matching ErrState.
func (s *Store) Requeue(ctx context.Context, id string, errMsg string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := s.stateOf(ctx, tx, id)
		if err != nil {
			return err
		}
		if st != Running {
			return &StateError{ID: id, From: st, To: Queued}
		}
		_, err = s.exec(ctx, tx,
			"UPDATE jobs SET state = ?, started_at = NULL, attempts = max(attempts - 1, 0), error = ? WHERE id = ?",
			Queued, errMsg, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("requeue job %q: %w", id, err)
	}
	return nil
}

// Recover repairs the store after the server stopped without finishing
// its running jobs (a crash, kill -9, power loss). Call it once after Open,
// before any worker claims a job. Every running job that has been started
// fewer than maxAttempts times goes back to the queue at its original place
// (Attempts kept, StartedAt cleared, Error saying why); the others become
// failed with an Error saying the server kept stopping. Queued jobs are
// untouched. It returns the ids requeued and failed, each in queue order.
// maxAttempts must be at least 1.
func (s *Store) Recover(ctx context.Context, maxAttempts int) (requeued, failed []string, err error) {
	if maxAttempts < 1 {
		return nil, nil, fmt.Errorf("recover jobs: max attempts %d, want at least 1", maxAttempts)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		requeued, failed = nil, nil // fn runs once, but keep it obviously clean
		type running struct {
			id       string
			attempts int
		}
		var jobs []running
		rows, err := s.txQuery(ctx, tx, false,
			"SELECT id, attempts FROM jobs WHERE state = ? ORDER BY seq", Running)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r running
			if err := rows.Scan(&r.id, &r.attempts); err != nil {
				rows.Close()
				return err
			}
			jobs = append(jobs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		now := s.now().UnixNano()
		for _, r := range jobs {
			if r.attempts < maxAttempts {
				msg := fmt.Sprintf("the server stopped while the job was running (attempt %d of %d); queued again",
					r.attempts, maxAttempts)
				if _, err := s.exec(ctx, tx,
					"UPDATE jobs SET state = ?, started_at = NULL, error = ? WHERE id = ?",
					Queued, msg, r.id); err != nil {
					return err
				}
				requeued = append(requeued, r.id)
				continue
			}
			msg := fmt.Sprintf("the server stopped while the job ran, %s (MAX_JOB_ATTEMPTS = %d); the job is not run again",
				times(r.attempts), maxAttempts)
			if _, err := s.exec(ctx, tx,
				"UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
				Failed, now, msg, r.id); err != nil {
				return err
			}
			failed = append(failed, r.id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("recover jobs: %w", err)
	}
	return requeued, failed, nil
}

func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}

// QueuePosition returns the 1-based place of job id among the queued jobs
// (1 is next to run), or 0 when the job is not queued. An unknown id gives
// ErrNotFound.
func (s *Store) QueuePosition(ctx context.Context, id string) (int, error) {
	var pos int
	err := s.queryRow(ctx, `SELECT CASE WHEN j.state = ?1
			THEN (SELECT count(*) FROM jobs q WHERE q.state = ?1 AND q.seq <= j.seq)
			ELSE 0 END
		FROM jobs j WHERE j.id = ?2`, Queued, id).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("queue position of job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("queue position of job %q: %w", id, err)
	}
	return pos, nil
}

// ListOptions selects the jobs List returns.
type ListOptions struct {
	// IncludeFinishedSince adds the jobs that finished at or after this
	// time. The zero time adds none.
	IncludeFinishedSince time.Time
	// Limit caps the number of jobs returned; zero or negative means
	// DefaultListLimit.
	Limit int
	// Identity, when not empty, returns only the jobs of that identity.
	Identity string
}

// List returns, from one consistent snapshot and at most opts.Limit jobs:
// the running jobs, then the queued jobs, both in queue order, then the
// jobs finished since opts.IncludeFinishedSince, newest first. When the
// limit cuts the list, the finished jobs go first, then the tail of the
// queue.
func (s *Store) List(ctx context.Context, opts ListOptions) ([]*Job, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	tx, err := s.begin(ctx, s.r, nil)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer tx.Rollback()

	// "?3 = ''" keeps one query text for both: the planner still uses
	// the identity's index when it is given.
	var out []*Job
	for _, st := range []State{Running, Queued} {
		js, err := scanJobs(s.txQuery(ctx, tx, true,
			"SELECT "+jobColumns+" FROM jobs WHERE state = ?1 AND (?3 = '' OR identity = ?3) ORDER BY seq LIMIT ?2",
			st, limit-len(out), opts.Identity))
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, js...)
	}
	if !opts.IncludeFinishedSince.IsZero() && len(out) < limit {
		js, err := scanJobs(s.txQuery(ctx, tx, true,
			"SELECT "+jobColumns+` FROM jobs WHERE finished_at >= ?1 AND (?3 = '' OR identity = ?3)
				ORDER BY finished_at DESC, seq DESC LIMIT ?2`,
			queryNanos(opts.IncludeFinishedSince), limit-len(out), opts.Identity))
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, js...)
	}
	return out, nil
}

// Counts returns the number of jobs in each state; every state is present
// in the map, with 0 when no job is in it.
func (s *Store) Counts(ctx context.Context) (map[State]int, error) {
	rows, err := s.query(ctx, "SELECT state, count(*) FROM jobs GROUP BY state")
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	m := map[State]int{Queued: 0, Running: 0, Succeeded: 0, Failed: 0, Cancelled: 0}
	for rows.Next() {
		var st State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count jobs: %w", err)
		}
		m[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return m, nil
}

// QueuePositions returns the 1-based place in the whole queue of each
// queued job of identity, by job id: one pass over the queue.
func (s *Store) QueuePositions(ctx context.Context, identity string) (map[string]int, error) {
	rows, err := s.query(ctx, `SELECT id, pos FROM (
			SELECT id, identity, row_number() OVER (ORDER BY seq) AS pos FROM jobs WHERE state = ?1)
		WHERE identity = ?2`, Queued, identity)
	if err != nil {
		return nil, fmt.Errorf("queue positions of %q: %w", identity, err)
	}
	defer rows.Close()
	m := map[string]int{}
	for rows.Next() {
		var id string
		var pos int
		if err := rows.Scan(&id, &pos); err != nil {
			return nil, fmt.Errorf("queue positions of %q: %w", identity, err)
		}
		m[id] = pos
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue positions of %q: %w", identity, err)
	}
	return m, nil
}

// QueuedCountOf returns the number of queued jobs of identity.
func (s *Store) QueuedCountOf(ctx context.Context, identity string) (int, error) {
	var n int
	if err := s.queryRow(ctx, "SELECT count(*) FROM jobs WHERE identity = ? AND state = ?", identity, Queued).Scan(&n); err != nil {
		return 0, fmt.Errorf("count queued jobs of %q: %w", identity, err)
	}
	return n, nil
}

// QueuedCount returns the number of queued jobs.
func (s *Store) QueuedCount(ctx context.Context) (int, error) {
	var n int
	if err := s.queryRow(ctx, "SELECT count(*) FROM jobs WHERE state = ?", Queued).Scan(&n); err != nil {
		return 0, fmt.Errorf("count queued jobs: %w", err)
	}
	return n, nil
}

// MarkDelivered records that the client confirmed receipt of the results of
// finished job id (DeliveredAt = now). Marking again keeps the first time.
// A job that has not finished gives an error matching ErrState.
func (s *Store) MarkDelivered(ctx context.Context, id string) error {
	return s.mark(ctx, id, "delivered_at", fmt.Sprintf("mark job %q delivered", id))
}

// MarkResultsRemoved records that the output directory of finished job id
// was removed (ResultsRemovedAt = now). Marking again keeps the first time.
// A job that has not finished gives an error matching ErrState.
func (s *Store) MarkResultsRemoved(ctx context.Context, id string) error {
	return s.mark(ctx, id, "results_removed_at", fmt.Sprintf("mark results of job %q removed", id))
}

// mark sets column (a constant from this file) to now if it is still NULL.
// op names the operation in errors.
func (s *Store) mark(ctx context.Context, id, column, op string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := s.stateOf(ctx, tx, id)
		if err != nil {
			return err
		}
		if !st.Terminal() {
			return fmt.Errorf("%w: job is %s, not finished", ErrState, st)
		}
		_, err = s.exec(ctx, tx,
			"UPDATE jobs SET "+column+" = coalesce("+column+", ?) WHERE id = ?",
			s.now().UnixNano(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// ResultsToExpire returns the finished jobs whose results have not been
// removed yet and that finished before finishedBefore, oldest first,
// delivered or not.
func (s *Store) ResultsToExpire(ctx context.Context, finishedBefore time.Time) ([]*Job, error) {
	js, err := scanJobs(s.query(ctx, "SELECT "+jobColumns+` FROM jobs
		WHERE finished_at < ? AND results_removed_at IS NULL
		ORDER BY finished_at, seq`, queryNanos(finishedBefore)))
	if err != nil {
		return nil, fmt.Errorf("list expired results: %w", err)
	}
	return js, nil
}
