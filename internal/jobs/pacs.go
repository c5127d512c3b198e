package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DeliveryState is the state of a job's delivery to a PACS, of one of its
// destinations, or of one instance.
type DeliveryState string

// The delivery states: pending until every destination confirmed every
// instance (delivered), or until an instance was refused or the retry time
// ran out (failed).
const (
	DeliveryPending   DeliveryState = "pending"
	DeliveryDelivered DeliveryState = "delivered"
	DeliveryFailed    DeliveryState = "failed"
)

// PACSInstance is one DICOM result file bound for one destination.
type PACSInstance struct {
	Dest           string // the route: "dicomweb" or "dimse"
	File           string // the result's name in the job's output
	SOPClassUID    string
	SOPInstanceUID string
	State          DeliveryState
	Error          string // why it is not delivered (the last attempt's error while pending)
	Warning        string // a warning the PACS stored it with
	Sends          int    // how many times recon sent it
	LastSentAt     time.Time
	ConfirmedAt    time.Time
}

// PACSDelivery is a job's delivery to the PACS.
type PACSDelivery struct {
	JobID     string
	State     DeliveryState
	Error     string
	StartedAt time.Time
	NextAt    time.Time // when the next attempt is due, while pending
	Tries     int       // attempts that ended without delivering everything
	EndedAt   time.Time
	Instances []PACSInstance // by destination, then file
}

// CreatePACSDelivery records that finished job jobID is to be delivered,
// with its instances (each pending, or failed when it cannot be sent),
// due at once. A job with a delivery already keeps it (created=false).
func (s *Store) CreatePACSDelivery(ctx context.Context, jobID string, insts []PACSInstance) (created bool, err error) {
	now := s.now().UnixNano()
	err = s.write(ctx, func(tx *sql.Tx) error {
		created = false
		var n int
		if err := s.txQueryRow(ctx, tx, "SELECT count(*) FROM pacs_deliveries WHERE job_id = ?", jobID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if _, err := s.exec(ctx, tx, `INSERT INTO pacs_deliveries (job_id, state, started_at, next_at) VALUES (?, ?, ?, ?)`,
			jobID, DeliveryPending, now, now); err != nil {
			return err
		}
		for _, in := range insts {
			st := in.State
			if st == "" {
				st = DeliveryPending
			}
			if _, err := s.exec(ctx, tx, `INSERT INTO pacs_instances
				(job_id, dest, file, sop_class_uid, sop_instance_uid, state, error) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				jobID, in.Dest, in.File, in.SOPClassUID, in.SOPInstanceUID, st, in.Error); err != nil {
				return err
			}
		}
		created = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("create PACS delivery of job %q: %w", jobID, err)
	}
	return created, nil
}

// GetPACSDelivery returns the delivery of job jobID with its instances, or
// an error matching ErrNotFound when the job has none.
func (s *Store) GetPACSDelivery(ctx context.Context, jobID string) (*PACSDelivery, error) {
	var (
		d             = PACSDelivery{JobID: jobID}
		started, next int64
		ended         sql.NullInt64
	)
	err := s.queryRow(ctx, `SELECT state, error, started_at, next_at, tries, ended_at FROM pacs_deliveries WHERE job_id = ?`, jobID).
		Scan(&d.State, &d.Error, &started, &next, &d.Tries, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("PACS delivery of job %q: %w", jobID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("PACS delivery of job %q: %w", jobID, err)
	}
	d.StartedAt, d.NextAt, d.EndedAt = time.Unix(0, started).UTC(), time.Unix(0, next).UTC(), timeFromDB(ended)
	rows, err := s.query(ctx, `SELECT dest, file, sop_class_uid, sop_instance_uid, state, error, warning, sends, last_sent_at, confirmed_at
		FROM pacs_instances WHERE job_id = ? ORDER BY dest, file`, jobID)
	if err != nil {
		return nil, fmt.Errorf("PACS delivery of job %q: %w", jobID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var in PACSInstance
		var sent, conf sql.NullInt64
		if err := rows.Scan(&in.Dest, &in.File, &in.SOPClassUID, &in.SOPInstanceUID, &in.State, &in.Error, &in.Warning,
			&in.Sends, &sent, &conf); err != nil {
			return nil, fmt.Errorf("PACS delivery of job %q: %w", jobID, err)
		}
		in.LastSentAt, in.ConfirmedAt = timeFromDB(sent), timeFromDB(conf)
		d.Instances = append(d.Instances, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("PACS delivery of job %q: %w", jobID, err)
	}
	return &d, nil
}

// PendingPACSDeliveries returns the ids of the pending deliveries, the
// earliest due first, with when each is due.
func (s *Store) PendingPACSDeliveries(ctx context.Context) (ids []string, due []time.Time, err error) {
	rows, err := s.query(ctx, `SELECT job_id, next_at FROM pacs_deliveries WHERE state = ? ORDER BY next_at, job_id`, DeliveryPending)
	if err != nil {
		return nil, nil, fmt.Errorf("pending PACS deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, nil, fmt.Errorf("pending PACS deliveries: %w", err)
		}
		ids, due = append(ids, id), append(due, time.Unix(0, n).UTC())
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("pending PACS deliveries: %w", err)
	}
	return ids, due, nil
}

// RecordPACSSends counts one more send of each named file of job jobID to
// dest, whatever its state, committed before the caller sends them: a
// crash mid-send leaves them counted as sent and not confirmed, and a send
// of an instance already confirmed shows in the count.
func (s *Store) RecordPACSSends(ctx context.Context, jobID, dest string, files []string) error {
	now := s.now().UnixNano()
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, f := range files {
			if _, err := s.exec(ctx, tx, `UPDATE pacs_instances SET sends = sends + 1, last_sent_at = ?
				WHERE job_id = ? AND dest = ? AND file = ?`, now, jobID, dest, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record PACS sends of job %q: %w", jobID, err)
	}
	return nil
}

// PACSOutcome is what became of one instance sent to one destination.
type PACSOutcome struct {
	File    string
	State   DeliveryState // delivered, failed, or pending (try again)
	Error   string
	Warning string
}

// RecordPACSOutcomes records, in one transaction, what the PACS said
// about instances of job jobID sent to dest. A delivered instance never
// changes again.
func (s *Store) RecordPACSOutcomes(ctx context.Context, jobID, dest string, outs []PACSOutcome) error {
	now := s.now().UnixNano()
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, o := range outs {
			var conf any
			if o.State == DeliveryDelivered {
				conf = now
			}
			if _, err := s.exec(ctx, tx, `UPDATE pacs_instances SET state = ?, error = ?, warning = ?, confirmed_at = ?
				WHERE job_id = ? AND dest = ? AND file = ? AND state = ?`,
				o.State, o.Error, o.Warning, conf, jobID, dest, o.File, DeliveryPending); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record PACS outcomes of job %q: %w", jobID, err)
	}
	return nil
}

// SchedulePACSRetry sets when the pending delivery of job jobID is next
// tried, counting one more try that did not deliver everything, with the
// error that stopped it.
func (s *Store) SchedulePACSRetry(ctx context.Context, jobID string, next time.Time, errMsg string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := s.exec(ctx, tx, `UPDATE pacs_deliveries SET next_at = ?, tries = tries + 1, error = ?
			WHERE job_id = ? AND state = ?`, queryNanos(next), errMsg, jobID, DeliveryPending)
		return err
	})
	if err != nil {
		return fmt.Errorf("schedule PACS retry of job %q: %w", jobID, err)
	}
	return nil
}

// EndPACSDelivery ends the pending delivery of job jobID as delivered or
// failed; instances still pending become failed with errMsg.
func (s *Store) EndPACSDelivery(ctx context.Context, jobID string, state DeliveryState, errMsg string) error {
	now := s.now().UnixNano()
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := s.exec(ctx, tx, `UPDATE pacs_deliveries SET state = ?, error = ?, ended_at = ?
			WHERE job_id = ? AND state = ?`, state, errMsg, now, jobID, DeliveryPending); err != nil {
			return err
		}
		if state == DeliveryFailed {
			_, err := s.exec(ctx, tx, `UPDATE pacs_instances SET state = ?, error = CASE WHEN error = '' THEN ? ELSE error END
				WHERE job_id = ? AND state = ?`, DeliveryFailed, errMsg, jobID, DeliveryPending)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("end PACS delivery of job %q: %w", jobID, err)
	}
	return nil
}

// RestartPACSDelivery makes the failed delivery of job jobID pending
// again, due at once, with a fresh retry time: its failed instances are
// sent again, the delivered ones are not. A delivery that is not failed
// gives an error matching ErrState; a job without one ErrNotFound.
func (s *Store) RestartPACSDelivery(ctx context.Context, jobID string) error {
	now := s.now().UnixNano()
	err := s.write(ctx, func(tx *sql.Tx) error {
		var st DeliveryState
		err := s.txQueryRow(ctx, tx, "SELECT state FROM pacs_deliveries WHERE job_id = ?", jobID).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if st != DeliveryFailed {
			return fmt.Errorf("%w: the delivery is %s, not failed", ErrState, st)
		}
		if _, err := s.exec(ctx, tx, `UPDATE pacs_deliveries SET state = ?, error = '', started_at = ?, next_at = ?, tries = 0, ended_at = NULL
			WHERE job_id = ?`, DeliveryPending, now, now, jobID); err != nil {
			return err
		}
		_, err = s.exec(ctx, tx, `UPDATE pacs_instances SET state = ?, error = '' WHERE job_id = ? AND state = ?`,
			DeliveryPending, jobID, DeliveryFailed)
		return err
	})
	if err != nil {
		return fmt.Errorf("restart PACS delivery of job %q: %w", jobID, err)
	}
	return nil
}

// SucceededWithoutPACSDelivery returns the ids of the jobs that succeeded
// at or after since, still have their results, and have no PACS delivery:
// the server stopped between recording the job's end and its delivery.
func (s *Store) SucceededWithoutPACSDelivery(ctx context.Context, since time.Time) ([]string, error) {
	rows, err := s.query(ctx, `SELECT id FROM jobs
		WHERE finished_at >= ? AND state = ? AND results_removed_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM pacs_deliveries d WHERE d.job_id = jobs.id)
		ORDER BY seq`, queryNanos(since), Succeeded)
	if err != nil {
		return nil, fmt.Errorf("jobs without PACS delivery: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("jobs without PACS delivery: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// PACSDeliveryPending reports whether job jobID has a pending PACS
// delivery, which keeps its results on the server.
func (s *Store) PACSDeliveryPending(ctx context.Context, jobID string) (bool, error) {
	var n int
	err := s.queryRow(ctx, "SELECT count(*) FROM pacs_deliveries WHERE job_id = ? AND state = ?", jobID, DeliveryPending).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("PACS delivery of job %q: %w", jobID, err)
	}
	return n > 0, nil
}
