package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Placement is where an executor outside the server's process (a batch
// system such as Slurm) holds an attempt of a job: recorded as soon as the
// attempt is handed over, so that a restarted server finds it again and
// never hands the same job over twice.
type Placement struct {
	JobID string
	// Attempt is the attempt of the job that was handed over.
	Attempt int
	// Ref is the attempt's id in the executor (a Slurm job id).
	Ref        string
	RecordedAt time.Time
}

// SetPlacement records that attempt of running job id is held by an
// executor as ref, in place of any earlier placement of the job. A job
// that is not running gives an error matching ErrState.
func (s *Store) SetPlacement(ctx context.Context, id string, attempt int, ref string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := s.stateOf(ctx, tx, id)
		if err != nil {
			return err
		}
		if st != Running {
			return fmt.Errorf("%w: job is %s, not running", ErrState, st)
		}
		_, err = s.exec(ctx, tx, `INSERT INTO placements (job_id, attempt, ref, recorded_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (job_id) DO UPDATE SET attempt = excluded.attempt, ref = excluded.ref, recorded_at = excluded.recorded_at`,
			id, attempt, ref, s.now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("record placement of job %q: %w", id, err)
	}
	return nil
}

// GetPlacement returns the placement of job id, or ErrNotFound when none
// is recorded.
func (s *Store) GetPlacement(ctx context.Context, id string) (*Placement, error) {
	var p Placement
	var at int64
	err := s.queryRow(ctx, "SELECT job_id, attempt, ref, recorded_at FROM placements WHERE job_id = ?", id).
		Scan(&p.JobID, &p.Attempt, &p.Ref, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("placement of job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("placement of job %q: %w", id, err)
	}
	p.RecordedAt = time.Unix(0, at).UTC()
	return &p, nil
}

// Placements returns every recorded placement, oldest first.
func (s *Store) Placements(ctx context.Context) ([]Placement, error) {
	rows, err := s.query(ctx, "SELECT job_id, attempt, ref, recorded_at FROM placements ORDER BY recorded_at")
	if err != nil {
		return nil, fmt.Errorf("list placements: %w", err)
	}
	defer rows.Close()
	var ps []Placement
	for rows.Next() {
		var p Placement
		var at int64
		if err := rows.Scan(&p.JobID, &p.Attempt, &p.Ref, &at); err != nil {
			return nil, fmt.Errorf("list placements: %w", err)
		}
		p.RecordedAt = time.Unix(0, at).UTC()
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list placements: %w", err)
	}
	return ps, nil
}

// ClearPlacement forgets the placement of job id (none is no error).
func (s *Store) ClearPlacement(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.exec(ctx, tx, "DELETE FROM placements WHERE job_id = ?", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("clear placement of job %q: %w", id, err)
	}
	return nil
}
