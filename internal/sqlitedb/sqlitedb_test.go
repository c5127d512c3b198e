package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// openDB opens path with migrations and closes it when the test ends.
func openDB(t *testing.T, path string, migrations []string) *sql.DB {
	t.Helper()
	db, err := Open(t.Context(), path, migrations)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// plainOpen opens path without any of the opener's settings, the way a
// tool or an older recon would.
func plainOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// pragmas reads the named settings from db.
func pragmas(t *testing.T, db *sql.DB, names ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, n := range names {
		var v string
		if err := db.QueryRow("PRAGMA " + n).Scan(&v); err != nil {
			t.Fatalf("PRAGMA %s: %v", n, err)
		}
		got[n] = v
	}
	return got
}

func TestOpenSettings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "x.db")
	w := openDB(t, path, []string{`CREATE TABLE t (x INTEGER) STRICT`})

	want := map[string]string{
		"journal_mode":       "wal",
		"synchronous":        "2",
		"foreign_keys":       "1",
		"busy_timeout":       "10000",
		"journal_size_limit": "67108864",
		"query_only":         "0",
	}
	got := pragmas(t, w, "journal_mode", "synchronous", "foreign_keys", "busy_timeout", "journal_size_limit", "query_only")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("writer: %s = %q, want %q", k, got[k], v)
		}
	}
	if n := w.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer: %d connections at most, want 1", n)
	}
	if _, err := w.Exec(`INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}

	r, err := OpenReaders(t.Context(), path, 3)
	if err != nil {
		t.Fatalf("OpenReaders: %v", err)
	}
	defer r.Close()
	got = pragmas(t, r, "journal_mode", "synchronous", "foreign_keys", "busy_timeout", "query_only")
	for k, v := range map[string]string{"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "10000", "query_only": "1"} {
		if got[k] != v {
			t.Errorf("readers: %s = %q, want %q", k, got[k], v)
		}
	}
	if n := r.Stats().MaxOpenConnections; n != 3 {
		t.Errorf("readers: %d connections at most, want 3", n)
	}
	var n int
	if err := r.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Errorf("readers see %d rows (%v), want the 1 committed", n, err)
	}
	if _, err := r.Exec(`INSERT INTO t VALUES (2)`); err == nil {
		t.Error("a reader wrote")
	}

	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {filepath.Dir(dir), 0o700 | os.ModeDir}, {path, 0o600}, {path + "-wal", 0o600}, {path + "-shm", 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}
}

// TestVerifyReadsBack: a connection that does not have a setting fails
// verification, whatever its connection string said.
func TestVerifyReadsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db := plainOpen(t, path+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	db.SetMaxOpenConns(1)
	err := verify(t.Context(), db, common())
	if err == nil || !strings.Contains(err.Error(), "synchronous") {
		t.Errorf("verify of a synchronous=NORMAL connection = %v, want an error about synchronous", err)
	}
	if _, err := db.Exec("PRAGMA synchronous = FULL"); err != nil {
		t.Fatal(err)
	}
	if err := Verify(t.Context(), db); err != nil {
		t.Errorf("Verify of a connection with every setting: %v", err)
	}
	err = verify(t.Context(), db, common(pragma{"query_only", "1"}))
	if err == nil || !strings.Contains(err.Error(), "query_only") {
		t.Errorf("verify of a writable connection as a reader = %v, want an error about query_only", err)
	}
}

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	// Each migration needs the one before it; the second and third are
	// not idempotent, so a migration run twice fails or shows.
	migrations := []string{
		`CREATE TABLE t (x INTEGER NOT NULL) STRICT`,
		`INSERT INTO t VALUES (1)`,
		`ALTER TABLE t ADD COLUMN y INTEGER NOT NULL DEFAULT 7`,
	}
	rows := func(db *sql.DB) [][2]int {
		t.Helper()
		rs, err := db.Query(`SELECT x, y FROM t ORDER BY x`)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		var out [][2]int
		for rs.Next() {
			var r [2]int
			if err := rs.Scan(&r[0], &r[1]); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}

	t.Run("in order", func(t *testing.T) {
		db, err := Open(t.Context(), path, migrations)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if v := userVersion(t, db); v != 3 {
			t.Errorf("user_version = %d, want 3", v)
		}
		if got := rows(db); !slices.Equal(got, [][2]int{{1, 7}}) {
			t.Errorf("rows = %v, want [[1 7]]", got)
		}
	})
	t.Run("once", func(t *testing.T) {
		for range 2 {
			db, err := Open(t.Context(), path, migrations)
			if err != nil {
				t.Fatal(err)
			}
			got := rows(db)
			db.Close()
			if !slices.Equal(got, [][2]int{{1, 7}}) {
				t.Errorf("rows after reopening = %v, want [[1 7]]", got)
			}
		}
	})
	t.Run("only the new", func(t *testing.T) {
		db, err := Open(t.Context(), path, append(slices.Clip(migrations), `INSERT INTO t (x) VALUES (2)`))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if v := userVersion(t, db); v != 4 {
			t.Errorf("user_version = %d, want 4", v)
		}
		if got := rows(db); !slices.Equal(got, [][2]int{{1, 7}, {2, 7}}) {
			t.Errorf("rows = %v, want [[1 7] [2 7]]", got)
		}
	})
	t.Run("newer refused", func(t *testing.T) {
		_, err := Open(t.Context(), path, migrations) // knows 3, the file has 4
		if !errors.Is(err, ErrNewerSchema) {
			t.Fatalf("Open of a version 4 database with 3 migrations = %v, want ErrNewerSchema", err)
		}
		for _, s := range []string{path, "version 4", "up to 3", "upgrade recon"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
		db := plainOpen(t, path)
		if v := userVersion(t, db); v != 4 {
			t.Errorf("user_version after the refusal = %d, want 4", v)
		}
	})
}

// TestFailedMigrationChangesNothing: the migrations run in one
// transaction, so one that fails leaves the database as it was.
func TestFailedMigrationChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	openDB(t, path, []string{`CREATE TABLE a (x INTEGER)`}).Close()
	_, err := Open(t.Context(), path, []string{
		`CREATE TABLE a (x INTEGER)`,
		`CREATE TABLE b (x INTEGER)`,
		`CREATE TABLE c (x INTEGER)`,
		`CREATE TABLE b (x INTEGER)`, // fails: b exists
	})
	if err == nil || !strings.Contains(err.Error(), "from version 3 to 4") {
		t.Fatalf("Open = %v, want an error migrating from version 3 to 4", err)
	}
	db := plainOpen(t, path)
	if v := userVersion(t, db); v != 1 {
		t.Errorf("user_version = %d, want 1", v)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name IN ('b', 'c')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d tables of the failed run left (%v), want 0", n, err)
	}
}

// TestNegativeVersionRefused: a user_version recon never writes is not
// taken for an empty database.
func TestNegativeVersionRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	if _, err := plainOpen(t, path).Exec("PRAGMA user_version = -1"); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(t.Context(), path, []string{`CREATE TABLE a (x INTEGER)`}); err == nil {
		db.Close()
		t.Fatal("Open of a database at version -1 succeeded")
	}
}

// TestConcurrentOpen: processes starting at once on a new file migrate it
// once; the others wait for the lock and find it done.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	migrations := []string{`CREATE TABLE t (x INTEGER)`, `INSERT INTO t VALUES (1)`}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			db, err := Open(context.Background(), path, migrations)
			if err == nil {
				err = db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := plainOpen(t, path).QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d rows (%v), want 1: migrated once", n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(notDir, "x.db"), dir, garbage} {
		if db, err := Open(t.Context(), path, nil); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
	missing := filepath.Join(dir, "missing.db")
	if db, err := OpenReaders(t.Context(), missing, 1); err == nil {
		db.Close()
		t.Error("OpenReaders of a missing database succeeded")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("OpenReaders created the database file")
	}
}

// TestDirectorySync: Open syncs the directory of the file, every time, and
// the parent of every directory it creates; it fails when it cannot.
func TestDirectorySync(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "x.db")
	var synced []string
	record := func(dir string) error {
		synced = append(synced, dir)
		return SyncDir(dir)
	}
	db, err := open(t.Context(), path, nil, record)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	want := []string{filepath.Join(root, "a", "b"), filepath.Join(root, "a"), root}
	if !slices.Equal(synced, want) {
		t.Errorf("created: synced %q, want %q", synced, want)
	}

	synced = nil
	if db, err = open(t.Context(), path, nil, record); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if want := want[:1]; !slices.Equal(synced, want) {
		t.Errorf("reopened: synced %q, want %q", synced, want)
	}

	failing := func(dir string) error { return errors.New("sync failed") }
	if db, err := open(t.Context(), filepath.Join(root, "y.db"), nil, failing); err == nil {
		db.Close()
		t.Error("Open succeeded although the directory sync failed")
	}
	if err := SyncDir(filepath.Join(root, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}
