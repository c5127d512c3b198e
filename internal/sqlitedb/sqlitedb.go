// Package sqlitedb opens the SQLite databases recon keeps its durable state
// in (the job store, the relay's routes, the watch daemon's state), all with
// the same settings, and brings their schemas up to date.
//
// A database opened here is in WAL mode with synchronous=FULL: a
// transaction is on stable storage when its commit returns. Open reads the
// settings back from SQLite rather than trusting the connection string, and
// syncs the directory that holds the file, so that the file itself survives
// a power loss. What a store keeps in its tables, and how it uses the
// connections, is the store's own concern.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// BusyTimeout is how long a statement waits for a lock held by another
// connection (another process on the same file) before it fails.
const BusyTimeout = 10 * time.Second

// MaxWALBytes bounds the size the write-ahead log is truncated back to
// after a checkpoint.
const MaxWALBytes = 64 << 20

// ErrNewerSchema is returned (wrapped) by Open for a database whose schema
// version is beyond the migrations it was given: one written by a newer
// recon. Open changes nothing in such a database.
var ErrNewerSchema = errors.New("database written by a newer recon")

// pragma is a setting every connection must have, as PRAGMA name reads it
// back.
type pragma struct{ name, want string }

// common returns what every connection, writer or reader, is opened with
// and must read back, and extra.
func common(extra ...pragma) []pragma {
	return append(extra,
		pragma{"busy_timeout", strconv.FormatInt(BusyTimeout.Milliseconds(), 10)},
		pragma{"foreign_keys", "1"},
		pragma{"journal_mode", "wal"},
		pragma{"synchronous", "2"}, // FULL
	)
}

// Open opens the database at path for writing and brings its schema to
// version len(migrations), where migrations[i] brings it from version i to
// i+1 (the version is kept in PRAGMA user_version). Migrations must only
// ever be appended: a database in the field has run every one up to its
// version. A database at a higher version than len(migrations) is refused
// with ErrNewerSchema.
//
// The file is created (mode 0600, and the -wal and -shm files SQLite makes
// beside it get the same mode) with its missing parent directories (mode
// 0700) when missing, and the directories are synced. Foreign keys are
// enforced.
//
// The returned pool has exactly one connection, so every change is made by
// one writer in turn; its transactions begin IMMEDIATE, which makes a
// read-check-write in one transaction atomic with respect to every other
// writer, in this process or another. The caller must Close it.
func Open(ctx context.Context, path string, migrations []string) (*sql.DB, error) {
	return open(ctx, path, migrations, SyncDir)
}

func open(ctx context.Context, path string, migrations []string, sync func(dir string) error) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := createFile(abs, sync); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_journal_mode": {"WAL"},
		"_txlock":       {"immediate"},
		"_pragma":       {fmt.Sprintf("journal_size_limit(%d)", MaxWALBytes)},
	}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	err = verify(ctx, db, common())
	if err == nil {
		err = migrate(ctx, db, migrations)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	return db, nil
}

// OpenReaders opens a pool of at most n (at least 1) query-only
// connections to the database at path, which Open has opened: reads on them run beside the
// writer's transactions and see every change committed before they start.
// They have the settings Open gives the writer (the last connection to
// close checkpoints the log, so it must sync fully too). The caller must
// Close the pool, before the writer so that the writer checkpoints last.
func OpenReaders(ctx context.Context, path string, n int) (*sql.DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	// mode=rw: a reader never creates the file.
	db, err := sql.Open("sqlite", dsn(abs, url.Values{"_query_only": {"1"}, "mode": {"rw"}}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	n = max(n, 1)
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if err := verify(ctx, db, common(pragma{"query_only", "1"})); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	return db, nil
}

// Verify reads back, on a connection of db, the settings Open and
// OpenReaders give every connection (WAL, synchronous=FULL, the busy
// timeout, foreign keys), and fails unless it has them all.
func Verify(ctx context.Context, db *sql.DB) error {
	return verify(ctx, db, common())
}

// dsn returns the connection string for the database file at the absolute
// path: a file: URI with the path escaped, so that no character of the path
// is taken for part of the query, and the settings common to every
// connection plus extra.
func dsn(abs string, extra url.Values) string {
	q := url.Values{
		"_busy_timeout": {strconv.FormatInt(BusyTimeout.Milliseconds(), 10)},
		"_foreign_keys": {"1"},
		"_synchronous":  {"FULL"},
	}
	for k, v := range extra {
		q[k] = append(q[k], v...)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// verify reads each setting back and fails unless it has the wanted value:
// a connection string SQLite or the driver did not honour must not pass
// for a durable store.
func verify(ctx context.Context, db *sql.DB, want []pragma) error {
	for _, p := range want {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+p.name).Scan(&got); err != nil {
			return fmt.Errorf("read %s: %w", p.name, err)
		}
		if got != p.want {
			return fmt.Errorf("%s is %q, want %q", p.name, got, p.want)
		}
	}
	return nil
}

// migrate brings the database to version len(migrations) in one
// transaction: a failed migration leaves it as it was.
func migrate(ctx context.Context, db *sql.DB, migrations []string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case v == len(migrations):
		return nil
	case v > len(migrations):
		return fmt.Errorf("%w: schema version %d, this recon understands up to %d: upgrade recon", ErrNewerSchema, v, len(migrations))
	case v < 0:
		return fmt.Errorf("schema version %d is not one recon writes", v)
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migrate schema from version %d to %d: %w", i, i+1, err)
		}
	}
	// PRAGMA takes no bound parameters; the value is a length.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return tx.Commit()
}

// createFile creates the database file (mode 0600) and its missing parent
// directories (mode 0700) unless it exists, and syncs the directories that
// hold them, so that the entries survive a power loss. The file's own
// directory is synced on every open: a process that created the file and
// died before its sync must not leave a store whose commits are durable
// but whose name is not. Creating the file here rather than in SQLite makes
// it, and the -wal and -shm files SQLite creates with the same mode,
// private to the user.
func createFile(path string, sync func(dir string) error) error {
	var created []string // directories MkdirAll will create, deepest first
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		created = append(created, d)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
	case err != nil:
		return err
	default:
		if err := f.Close(); err != nil {
			return err
		}
	}
	if err := sync(filepath.Dir(path)); err != nil {
		return err
	}
	for _, d := range created {
		if err := sync(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// SyncDir syncs the directory dir, so that the entries created, renamed or
// removed in it survive a power loss.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
