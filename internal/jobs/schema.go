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
}
