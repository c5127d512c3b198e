package audit

import (
	"context"
	"database/sql"
	"errors"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// head is the chain's end: the last record's seq, the hash of its line,
// and the line itself (so a file that lost it can be completed).
type head struct {
	seq  uint64
	hash string
	line []byte
}

// headMigrations is the schema of the head store. Append only.
var headMigrations = []string{
	`CREATE TABLE head (
		id   INTEGER PRIMARY KEY CHECK (id = 1),
		seq  INTEGER NOT NULL,
		hash TEXT NOT NULL,
		line BLOB NOT NULL
	)`,
}

// headStore keeps the head in a SQLite file of its own, in the server's
// state directory: the audit file may live with the logs, where log
// shippers and rotation tools write; the head lives where only the server
// does, and a change to the file that is not a record appended by the
// server no longer ends at it.
type headStore struct{ db *sql.DB }

func openHead(ctx context.Context, path string) (*headStore, error) {
	db, err := sqlitedb.Open(ctx, path, headMigrations)
	if err != nil {
		return nil, err
	}
	return &headStore{db: db}, nil
}

// get returns the head; the zero head when no record was written yet.
func (s *headStore) get(ctx context.Context) (head, error) {
	var h head
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash, line FROM head WHERE id = 1`).Scan(&seq, &h.hash, &h.line)
	if errors.Is(err, sql.ErrNoRows) {
		return head{}, nil
	}
	h.seq = uint64(seq)
	return h, err
}

// set makes h the head, durably.
func (s *headStore) set(ctx context.Context, h head) error {
	if h.seq == 0 {
		_, err := s.db.ExecContext(ctx, `DELETE FROM head`)
		return err
	}
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO head (id, seq, hash, line) VALUES (1, ?, ?, ?)
		 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, line = excluded.line`,
		int64(h.seq), h.hash, h.line)
	return err
}

func (s *headStore) close() error { return s.db.Close() }
