package jobs

// migrations[i] brings the schema from version i to version i+1 (see
// sqlitedb.Open). Append, never edit: a database in the field has run
// every migration up to its version.
var migrations = [...]string{
	// 0 → 1: the jobs table.
	//
	// seq is the queue order: AUTOINCREMENT never reuses a number, so a
	// job keeps its place through requeues and nothing jumps ahead of it.
	// Times are Unix nanoseconds in UTC, NULL while not yet. files,
	// options and results are JSON (they are read and written whole with
	// the job and never queried into). An empty submission id is stored
	// as NULL so that only non-empty ones are unique.
	`CREATE TABLE jobs (
		seq                INTEGER PRIMARY KEY AUTOINCREMENT,
		id                 TEXT    NOT NULL UNIQUE,
		submission_id      TEXT    UNIQUE,
		state              TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
		files              TEXT    NOT NULL,
		options            TEXT    NOT NULL,
		client_addr        TEXT    NOT NULL,
		submitted_at       INTEGER NOT NULL,
		started_at         INTEGER,
		finished_at        INTEGER,
		attempts           INTEGER NOT NULL DEFAULT 0,
		exit_code          INTEGER,
		error              TEXT    NOT NULL DEFAULT '',
		results            TEXT,
		delivered_at       INTEGER,
		results_removed_at INTEGER
	) STRICT;
	-- Claim, QueuePosition, QueuedCount, Counts, List and Recover all
	-- walk one state in queue order.
	CREATE INDEX jobs_state_seq ON jobs (state, seq);
	-- List (finished since) and ResultsToExpire.
	CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;`,
	// 1 → 2: PACS delivery (pacs.go): one row per job to deliver, one per
	// instance and destination, with its outcome and how often it was
	// sent.
	`CREATE TABLE pacs_deliveries (
		job_id     TEXT    PRIMARY KEY,
		state      TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
		error      TEXT    NOT NULL DEFAULT '',
		started_at INTEGER NOT NULL,
		next_at    INTEGER NOT NULL,
		tries      INTEGER NOT NULL DEFAULT 0,
		ended_at   INTEGER
	) STRICT;
	CREATE INDEX pacs_deliveries_state ON pacs_deliveries (state, next_at);
	CREATE TABLE pacs_instances (
		job_id           TEXT    NOT NULL,
		dest             TEXT    NOT NULL,
		file             TEXT    NOT NULL,
		sop_class_uid    TEXT    NOT NULL,
		sop_instance_uid TEXT    NOT NULL,
		state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
		error            TEXT    NOT NULL DEFAULT '',
		warning          TEXT    NOT NULL DEFAULT '',
		sends            INTEGER NOT NULL DEFAULT 0,
		last_sent_at     INTEGER,
		confirmed_at     INTEGER,
		PRIMARY KEY (job_id, dest, file)
	) STRICT;`,
	// 2 → 3: where an executor outside this process (a Slurm cluster)
	// holds a job's attempt: ref is its id there (the Slurm job id),
	// recorded once the attempt was handed over, so that a restarted
	// server finds it again instead of handing it over twice.
	`CREATE TABLE placements (
		job_id      TEXT    PRIMARY KEY,
		attempt     INTEGER NOT NULL,
		ref         TEXT    NOT NULL,
		recorded_at INTEGER NOT NULL
	) STRICT;`,
	// 3 → 4: every job belongs to the client identity that submitted it;
	// the jobs from before identities belong to "default", the identity
	// of SHARED_KEY. A submission id is unique per identity (another
	// identity's equal id must neither find nor block the job), which
	// needs a new table. seq values are kept, and so is the counter of
	// AUTOINCREMENT, so no job ever jumps ahead in the queue.
	`CREATE TABLE jobs_v2 (
		seq                INTEGER PRIMARY KEY AUTOINCREMENT,
		id                 TEXT    NOT NULL UNIQUE,
		identity           TEXT    NOT NULL,
		submission_id      TEXT,
		state              TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
		files              TEXT    NOT NULL,
		options            TEXT    NOT NULL,
		client_addr        TEXT    NOT NULL,
		submitted_at       INTEGER NOT NULL,
		started_at         INTEGER,
		finished_at        INTEGER,
		attempts           INTEGER NOT NULL DEFAULT 0,
		exit_code          INTEGER,
		error              TEXT    NOT NULL DEFAULT '',
		results            TEXT,
		delivered_at       INTEGER,
		results_removed_at INTEGER,
		UNIQUE (identity, submission_id)
	) STRICT;
	INSERT INTO jobs_v2 (seq, id, identity, submission_id, state, files, options, client_addr,
		submitted_at, started_at, finished_at, attempts, exit_code, error, results, delivered_at, results_removed_at)
		SELECT seq, id, 'default', submission_id, state, files, options, client_addr,
		submitted_at, started_at, finished_at, attempts, exit_code, error, results, delivered_at, results_removed_at
		FROM jobs;
	INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs_v2', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs_v2');
	UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)) WHERE name = 'jobs_v2';
	DROP TABLE jobs;
	ALTER TABLE jobs_v2 RENAME TO jobs;
	CREATE INDEX jobs_state_seq ON jobs (state, seq);
	CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
	-- An identity's own jobs: queue, per-identity limits.
	CREATE INDEX jobs_identity_state_seq ON jobs (identity, state, seq);`,
}
