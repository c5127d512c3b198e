package jobs

import (
	"context"
	"database/sql"
	"fmt"
)

// InsertQueuedForTest adds n queued jobs in one transaction, for building
// large stores quickly in benchmarks. It bypasses Create's checks.
func InsertQueuedForTest(ctx context.Context, s *Store, n int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO jobs
			(id, identity, state, files, options, client_addr, submitted_at)
			VALUES (?, 'default', ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		now := s.now().UnixNano()
		for i := range n {
			files := fmt.Sprintf(`[{"name":"meas_%06d.dat","size":1073741824,"sha256":"%064x"}]`, i, i)
			if _, err := stmt.ExecContext(ctx, NewID(), Queued, files, `{"RESOLUTION":"1mm"}`, "192.0.2.1:40000", now); err != nil {
				return err
			}
		}
		return nil
	})
}
