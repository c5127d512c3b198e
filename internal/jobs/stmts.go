package jobs

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache holds the store's prepared statements, so that SQLite compiles
// each query once per connection instead of on every call: compiling was
// about a fifth of the server's CPU time for a small job. Every query the
// store runs is a constant string, so the cache stays small.
//
// A query missing from the cache in a transaction cannot be prepared on its
// pool then: that would wait for a connection, and the writer pool has only
// the one the transaction holds. It runs unprepared and is noted; the next
// transaction on that pool prepares it before it begins.
type stmtCache struct {
	mu     sync.Mutex
	m      map[stmtKey]*sql.Stmt
	want   map[stmtKey]bool // to prepare before the next transaction
	closed bool
}

type stmtKey struct {
	db *sql.DB
	q  string
}

var errStoreClosed = errors.New("job store closed")

// lookup returns q prepared on db, or nil.
func (c *stmtCache) lookup(db *sql.DB, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errStoreClosed
	}
	return c.m[stmtKey{db, q}], nil
}

// prepare prepares q on db (no transaction of this goroutine may hold a
// connection of db) and caches it.
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := stmtKey{db, q}
	if c.closed {
		st.Close()
		return nil, errStoreClosed
	}
	if old := c.m[k]; old != nil { // another goroutine was first
		st.Close()
		return old, nil
	}
	if c.m == nil {
		c.m = map[stmtKey]*sql.Stmt{}
	}
	c.m[k] = st
	return st, nil
}

// wantLater notes q to prepare on db before its next transaction.
func (c *stmtCache) wantLater(db *sql.DB, q string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want == nil {
		c.want = map[stmtKey]bool{}
	}
	c.want[stmtKey{db, q}] = true
}

// prepareWanted prepares the queries noted for db. Call it before beginning
// a transaction on db. A failure leaves the query unprepared (it still
// runs, compiled each time).
func (c *stmtCache) prepareWanted(ctx context.Context, db *sql.DB) {
	c.mu.Lock()
	var qs []string
	for k := range c.want {
		if k.db == db {
			qs = append(qs, k.q)
			delete(c.want, k)
		}
	}
	c.mu.Unlock()
	for _, q := range qs {
		c.prepare(ctx, db, q)
	}
}

// begin begins a transaction on db, with the queries earlier transactions
// missed prepared first.
func (s *Store) begin(ctx context.Context, db *sql.DB, opts *sql.TxOptions) (*sql.Tx, error) {
	s.stmts.prepareWanted(ctx, db)
	return db.BeginTx(ctx, opts)
}

// close closes every statement; the cache refuses work afterwards.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// txStmt returns q's cached statement for use in tx, a transaction on the
// writer pool (or on the readers, with reader), or nil: the query is then
// noted to be prepared before the pool's next transaction.
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, q string, reader bool) (*sql.Stmt, error) {
	db := s.w
	if reader {
		db = s.r
	}
	st, err := s.stmts.lookup(db, q)
	if err != nil || st == nil {
		if err == nil {
			s.stmts.wantLater(db, q)
		}
		return nil, err
	}
	return tx.StmtContext(ctx, st), nil
}

// exec runs q in tx.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	st, err := s.txStmt(ctx, tx, q, false)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return tx.ExecContext(ctx, q, args...)
	}
	return st.ExecContext(ctx, args...)
}

// txQueryRow runs q in tx for one row.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) scanner {
	st, err := s.txStmt(ctx, tx, q, false)
	switch {
	case err != nil:
		return errRow{err}
	case st == nil:
		return tx.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// txQuery runs q in tx, a transaction on the writer (or, with reader, on
// the readers).
func (s *Store) txQuery(ctx context.Context, tx *sql.Tx, reader bool, q string, args ...any) (*sql.Rows, error) {
	st, err := s.txStmt(ctx, tx, q, reader)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return tx.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// readStmt returns q prepared on the readers.
func (s *Store) readStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	st, err := s.stmts.lookup(s.r, q)
	if err != nil || st != nil {
		return st, err
	}
	return s.stmts.prepare(ctx, s.r, q)
}

// queryRow runs q on a reader for one row.
func (s *Store) queryRow(ctx context.Context, q string, args ...any) scanner {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// query runs q on a reader.
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// errRow is a row whose query could not be run.
type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }
