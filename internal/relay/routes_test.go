package relay

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/recon-mri/recon/internal/sqlitedb"
)

// routesV1 is the route store's schema at version 1, before submissions
// had handed_over, as an older relay wrote it. A copy on purpose: a change
// to the migrations must not change what the test opens.
const routesV1 = `CREATE TABLE routes (
		job_id     TEXT    PRIMARY KEY,
		backend    TEXT    NOT NULL,
		created_at INTEGER NOT NULL
	) STRICT;
	CREATE TABLE submissions (
		submission_id TEXT    PRIMARY KEY,
		backend       TEXT    NOT NULL,
		created_at    INTEGER NOT NULL
	) STRICT;
	INSERT INTO routes VALUES ('job-1', 'b:1', 1);
	INSERT INTO submissions VALUES ('sid-1', 'b:1', 1);
	PRAGMA user_version = 1;`

// writeOldRoutes writes a route database the way the relay did before it
// opened through sqlitedb, running the statements given.
func writeOldRoutes(t *testing.T, path, stmts string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmts); err != nil {
		t.Fatal(err)
	}
}

// TestRoutesFromOlderRelay: a route database of schema version 1 or 2
// opens with its routes and submissions; a version 1 one gets
// handed_over, its submissions taken as handed over.
func TestRoutesFromOlderRelay(t *testing.T) {
	ctx := t.Context()
	for _, tt := range []struct {
		name   string
		stmts  string
		handed bool
	}{
		{"version 1", routesV1, true},
		{"version 2", routesV1 + `ALTER TABLE submissions ADD COLUMN handed_over INTEGER NOT NULL DEFAULT 1;
			UPDATE submissions SET handed_over = 0; PRAGMA user_version = 2;`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "routes.db")
			writeOldRoutes(t, path, tt.stmts)
			s, err := openRoutes(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if b, who, err := s.job(ctx, "job-1"); err != nil || b != "b:1" || who != "" {
				t.Errorf("job route = %q (%q), %v; want b:1 of no known identity", b, who, err)
			}
			if err := s.putJob(ctx, "job-2", "c:1", "alice"); err != nil {
				t.Fatal(err)
			}
			if b, who, err := s.job(ctx, "job-2"); err != nil || b != "c:1" || who != "alice" {
				t.Errorf("new job route = %q (%q), %v; want c:1 of alice", b, who, err)
			}
			if b, h, err := s.submission(ctx, "sid-1"); err != nil || b != "b:1" || h != tt.handed {
				t.Errorf("submission = %q, %v, %v; want b:1, %v", b, h, err, tt.handed)
			}
			if err := s.putSubmission(ctx, "sid-2", "c:1"); err != nil {
				t.Fatal(err)
			}
			var v int
			if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != len(routeMigrations) {
				t.Errorf("user_version = %d, %v; want %d", v, err, len(routeMigrations))
			}
		})
	}
}

// TestRoutesDurable: the route store's connection has the opener's
// settings (WAL, synchronous=FULL), read back from SQLite.
func TestRoutesDurable(t *testing.T) {
	s, err := openRoutes(filepath.Join(t.TempDir(), "routes.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := sqlitedb.Verify(t.Context(), s.db); err != nil {
		t.Error(err)
	}
}

// TestRoutesRefuseNewer: a route database from a newer relay is refused,
// not changed.
func TestRoutesRefuseNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.db")
	writeOldRoutes(t, path, routesV1+`PRAGMA user_version = 99;`)
	s, err := openRoutes(path)
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, sqlitedb.ErrNewerSchema) {
		t.Errorf("openRoutes of a version 99 database = %v, want ErrNewerSchema", err)
	}
}
