package config

import (
	"strings"
	"time"
)

// valueType is how a key's value is read and validated.
type valueType int

const (
	typeString      valueType = iota
	typeHost                  // host name or IP address
	typePort                  // 0–65535
	typeInt                   // integer in [min, max]
	typeMiB                   // integer MiB in [min, max], stored as bytes
	typeSize                  // bytes, optional KiB/MiB/GiB/TiB suffix, in [min, max]
	typeSeconds               // decimal seconds in [dmin, dmax]
	typeHours                 // decimal hours in [dmin, dmax]
	typeKey                   // keys.Key
	typePath                  // path, relative to the config file's directory
	typeFileName              // a plain file name
	typeLogLevel              // slog.Level
	typeIPList                // *allowlist.List
	typeHostPorts             // []string of host:port
	typeGlob                  // filepath.Match pattern
	typeJSONOptions           // JSON object → map[string]string
	typeAddr                  // optional host:port of a loopback listener ("" = off)
	typeBool                  // true or false
	typeUIDRoot               // a DICOM UID root, room left for unique digits
)

var typeNames = map[valueType]string{
	typeString:      "string",
	typeHost:        "host",
	typePort:        "port",
	typeInt:         "integer",
	typeMiB:         "integer (MiB)",
	typeSize:        "size",
	typeSeconds:     "seconds",
	typeHours:       "hours",
	typeKey:         "key",
	typePath:        "path",
	typeFileName:    "file name",
	typeLogLevel:    "log level",
	typeIPList:      "IP list",
	typeHostPorts:   "host:port list",
	typeGlob:        "glob",
	typeJSONOptions: "JSON object",
	typeAddr:        "loopback host:port",
	typeBool:        "true or false",
	typeUIDRoot:     "DICOM UID root",
}

// program is a set of recon programs, for the "used by" column and for
// checking that each loader reads exactly its keys.
type program uint8

const (
	progServer     program = 1 << iota // recon server
	progClient                         // recon submit, status, queue, fetch
	progWatch                          // recon watch
	progAdmin                          // recon admin
	progRelay                          // recon relay
	progRelayAdmin                     // recon relay-admin
)

var programNames = []struct {
	p    program
	name string
}{
	{progServer, "server"},
	{progClient, "client"},
	{progWatch, "watch"},
	{progAdmin, "admin"},
	{progRelay, "relay"},
	{progRelayAdmin, "relay-admin"},
}

func (p program) String() string {
	var names []string
	for _, n := range programNames {
		if p&n.p != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ", ")
}

// field is one key of a config file: the single source for parsing,
// defaults, the default file and the reference documentation.
type field struct {
	name string
	typ  valueType
	// def is the default value ("" is the empty value), parsed like a value
	// from a file and written (quoted if need be) into a fresh file.
	// A typeKey field has no default: it is required unless optional.
	def      string
	optional bool // typeKey only: may be absent
	nonEmpty bool // typeString, typePath, typeHost…: the empty value is refused
	min, max int64
	dmin     time.Duration
	dmax     time.Duration
	usedBy   program
	doc      string
}

// section groups fields in the default file, as the prototype's example did.
type section struct {
	title  string
	fields []field
	// note is written as a comment after the fields.
	note string
}

// schema is the set of keys of one kind of file.
type schema struct {
	file     string // recon.opts or relay.opts
	title    string // the default file's first comment line
	intro    string // comment lines after the title
	sections []section
	legacy   []string // keys accepted and ignored
	byName   map[string]*field
}

func (s *schema) field(name string) *field { return s.byName[name] }

func (s *schema) isLegacy(name string) bool {
	for _, l := range s.legacy {
		if l == name {
			return true
		}
	}
	return false
}

func newSchema(s *schema) *schema {
	s.byName = map[string]*field{}
	for i := range s.sections {
		for j := range s.sections[i].fields {
			f := &s.sections[i].fields[j]
			if _, dup := s.byName[f.name]; dup {
				panic("config: duplicate field " + f.name)
			}
			s.byName[f.name] = f
		}
	}
	return s
}

const (
	maxPortDefault = 65535
	day            = 24 * time.Hour
	maxSize        = 1 << 50 // 1 PiB
	maxMiB         = 1 << 30 // 1 PiB in MiB
)

// legacyKeys are keys of the prototype's recon.opts that recon accepts and
// ignores, with a warning.
var legacyKeys = []string{
	"SCANNER_USERNAME",
	"SCANNER_PASSWORD",
	"SSH_PORT",
	"SOURCE_DATA_PATH",
	"SCANNER_DICOM_SOURCE_DIR",
	"RECON_SERVER_DICOM_OUTPUT_DIR",
}

func reconSchema() *schema {
	const srv, cli, wat, adm = progServer, progClient, progWatch, progAdmin
	return newSchema(&schema{
		file:  "recon.opts",
		title: "recon.opts - configuration of recon server, its clients (recon submit, status, queue, fetch, watch) and recon admin",
		intro: "Format: one ITEM = VALUE per line; '#' starts a comment; quote a value that contains '#'. " +
			"Relative paths are relative to this file's directory. Each program reads only the keys it uses. " +
			"This file holds secret keys: keep it private (mode 0600).",
		legacy: legacyKeys,
		sections: []section{
			{title: "Server Main Connection", fields: []field{
				{name: "SERVER_HOSTNAME", typ: typeHost, def: "localhost", nonEmpty: true, usedBy: srv | cli | wat,
					doc: "Host name or IP address the server listens on and clients connect to."},
				{name: "SERVER_PORT", typ: typePort, def: "60000", min: 0, max: maxPortDefault, usedBy: srv | cli | wat,
					doc: "TCP port of the server for clients. 0 lets the server pick a free port (for tests); a client needs the real port."},
				{name: "SHARED_KEY", typ: typeKey, optional: true, usedBy: srv | cli | wat,
					doc: "Key of the client-server channel, as printed by recon keygen; a client's own key. On the server it is the key of the identity default; it may be left empty there only when CLIENT_KEYS_FILE is set. Clients need it."},
			}},
			{title: "Client Identities (Server)", fields: []field{
				{name: "CLIENT_KEYS_FILE", typ: typePath, def: "", usedBy: srv,
					doc: "File of client identities, one NAME = KEY per line (NAME: 1-64 letters, digits, '-', '_', '.'; NAME = KEY1,KEY2 while a key is rotated), as printed by recon keygen --name NAME; empty: SHARED_KEY alone. Each identity sees only its own jobs. SIGHUP and recon admin reload read it again."},
				{name: "RELAY_SHARED_KEY", typ: typeKey, optional: true, usedBy: srv,
					doc: "Key a relay uses to reach this server (the relay's BACKEND_SHARED_KEY); only a session with it may act for the relay's client identities. Unset: a relay uses a client key, and every job through it belongs to that key's identity."},
				{name: "MAX_QUEUED_JOBS_PER_CLIENT", typ: typeInt, def: "0", min: 0, max: 1_000_000, usedBy: srv,
					doc: "Jobs one client identity may have waiting in the queue; a submission beyond it is refused with a retryable error. 0 means MAX_QUEUED_JOBS."},
			}},
			{title: "Security", fields: []field{
				{name: "TRUSTED_IPS", typ: typeIPList, def: "127.0.0.1,::1", usedBy: srv,
					doc: "Comma-separated IP addresses and CIDR prefixes allowed to connect as clients; blank allows every address."},
			}},
			{title: "Paths", fields: []field{
				{name: "RECON_SERVER_BASE_PFILE_DIR", typ: typePath, def: "recon_data/inputs", nonEmpty: true, usedBy: srv,
					doc: "Base directory of the job input directories (received raw-data files)."},
				{name: "RECON_SCRIPT_PATH", typ: typePath, def: "default_recon_script.sh", nonEmpty: true, usedBy: srv,
					doc: "Reconstruction script, run as SCRIPT INPUT_DIR --output-dir OUTPUT_DIR without a shell."},
				{name: "RECON_JOB_OUTPUT_BASE_DIR", typ: typePath, def: "recon_data/outputs", nonEmpty: true, usedBy: srv,
					doc: "Base directory of the job output directories (results waiting to be fetched)."},
				{name: "RECON_SERVER_STATE_DIR", typ: typePath, def: "recon_data/state", nonEmpty: true, usedBy: srv,
					doc: "Directory of the server's durable state (the SQLite job database); keep it out of /tmp."},
			}, note: "RECON_SERVER_DICOM_OUTPUT_DIR (legacy global output) is ignored: outputs are per job."},
			{title: "Logging", fields: []field{
				{name: "LOG_FILEPATH", typ: typePath, def: "recon.log", usedBy: srv,
					doc: "File the server appends its JSON log to; empty logs to standard error."},
				{name: "LOG_LEVEL", typ: typeLogLevel, def: "INFO", usedBy: srv,
					doc: "Least severe level logged: DEBUG, INFO, WARNING (or WARN), ERROR."},
				{name: "AUDIT_LOG_FILEPATH", typ: typePath, def: "", usedBy: srv,
					doc: "Audit trail, JSON lines chained by SHA-256 (recon admin audit reads and verifies it); empty is recon_audit.jsonl beside LOG_FILEPATH (in RECON_SERVER_STATE_DIR when LOG_FILEPATH is empty). The server rotates it itself: do not rotate it with logrotate."},
			}},
			{title: "Server Settings", fields: []field{
				{name: "HANDSHAKE_TIMEOUT_SECONDS", typ: typeSeconds, def: "10", dmin: time.Second, dmax: time.Hour, usedBy: srv,
					doc: "A connection that has not completed the encrypted handshake (proved its key) this long after it was accepted is closed."},
				{name: "IDLE_TIMEOUT_SECONDS", typ: typeSeconds, def: "300", dmin: time.Second, dmax: day, usedBy: srv,
					doc: "A client session with no request, or a transfer or reply that makes no progress, for this long is closed."},
				{name: "MAX_CONCURRENT_JOBS", typ: typeInt, def: "1", min: 1, max: 1024, usedBy: srv,
					doc: "Jobs run at the same time (1-1024); recon admin setmaxjobs changes it while the server runs."},
				{name: "MAX_QUEUED_JOBS", typ: typeInt, def: "10000", min: 1, max: 1_000_000, usedBy: srv,
					doc: "Jobs that may wait in the queue; a submission beyond it is refused with a retryable error."},
				{name: "MAX_FILES_PER_JOB", typ: typeInt, def: "1000", min: 1, max: 1_000_000, usedBy: srv,
					doc: "Input files one job may have."},
				{name: "MAX_JOB_INPUT_BYTES", typ: typeSize, def: "64GiB", min: 1, max: maxSize, usedBy: srv,
					doc: "Total size of one job's input files: bytes, or a number with a KiB, MiB, GiB or TiB suffix."},
				{name: "MIN_FREE_DISK_MB", typ: typeMiB, def: "1024", min: 0, max: maxMiB, usedBy: srv,
					doc: "Free space (MiB, 1 MB = 1024 x 1024 bytes here) kept on the input, output and state disks; a submission that would use it is refused, and a job whose output grows into it is stopped and fails."},
				{name: "MAX_JOB_ATTEMPTS", typ: typeInt, def: "3", min: 1, max: 100, usedBy: srv,
					doc: "Times a job is started before it fails for good (a run cut short by a server crash is retried)."},
				{name: "JOB_TIMEOUT_SECONDS", typ: typeSeconds, def: "0", dmin: 0, dmax: 365 * day, usedBy: srv,
					doc: "Time limit of one run of the script; 0 means none."},
				{name: "KILL_GRACE_SECONDS", typ: typeSeconds, def: "10", dmin: time.Second, dmax: 20 * time.Second, usedBy: srv,
					doc: "Seconds a cancelled, timed-out or stopping script's process group has between SIGTERM and SIGKILL (1-20: a stopping server waits at most 30 s for its scripts)."},
				{name: "RESULT_RETENTION_HOURS", typ: typeHours, def: "168", dmin: 3600 * time.Millisecond, dmax: 3650 * day, usedBy: srv,
					doc: "How long results wait to be fetched before they are deleted."},
				{name: "UPLOAD_RESUME_HOURS", typ: typeHours, def: "24", dmin: 0, dmax: 3650 * day, usedBy: srv,
					doc: "How long the received part of a broken upload is kept for its client to resume it (same submission id); 0 discards it at once."},
				{name: "MAX_RESULT_FILES", typ: typeInt, def: "10000", min: 1, max: 1_000_000, usedBy: srv,
					doc: "Result files one job may return."},
				{name: "MAX_RESULT_BYTES", typ: typeSize, def: "64GiB", min: 1, max: maxSize, usedBy: srv,
					doc: "Total size of one job's results: bytes, or a number with a KiB, MiB, GiB or TiB suffix. Checked while the script runs: a job whose output passes it is stopped and fails."},
				{name: "MAX_RESERVED_BYTES_PER_CLIENT", typ: typeSize, def: "0", min: 0, max: maxSize, usedBy: srv,
					doc: "Disk space one client identity may hold with its uploads in progress (each holds its announced size from the start): bytes, or a number with a KiB, MiB, GiB or TiB suffix; 0 means half the input disk's size less MIN_FREE_DISK_MB (raise it if one job's inputs may be larger). Through a relay with RELAY_SHARED_KEY, each identity of the relay's clients counts on its own."},
				{name: "MAX_KEPT_UPLOAD_BYTES_PER_CLIENT", typ: typeSize, def: "0", min: 0, max: maxSize, usedBy: srv,
					doc: "Disk space the broken uploads of one client identity kept for resuming may take; over it, its oldest are removed: bytes, or a number with a suffix; 0 means a quarter of the input disk's size less MIN_FREE_DISK_MB."},
				{name: "MAX_KEPT_UPLOAD_BYTES", typ: typeSize, def: "0", min: 0, max: maxSize, usedBy: srv,
					doc: "Disk space all broken uploads kept for resuming may take together; over it, the oldest are removed: bytes, or a number with a suffix; 0 means half the input disk's size less MIN_FREE_DISK_MB. A submission short of space also removes kept uploads, oldest first."},
				{name: "KEEP_FAILED_OUTPUTS", typ: typeBool, def: "false", usedBy: srv,
					doc: "Keep what a failed job wrote, for fetching and debugging, until fetched or RESULT_RETENTION_HOURS; it is the first removed when a submission needs the space. false removes it when the job fails."},
				{name: "DICOM_UID_ROOT", typ: typeUIDRoot, def: "2.25", nonEmpty: true, usedBy: srv,
					doc: "Root of the UIDs of the DICOM images recon dicom writes (passed to the script as RECON_DICOM_UID_ROOT): 2.25 makes UUID-derived UIDs, which need no registered root; a site's own root may have at most 43 characters."},
			}},
			{title: "Resource Management (Server)", fields: []field{
				{name: "MAX_CPU_LOAD_PERCENT", typ: typeInt, def: "75", min: 1, max: 100, usedBy: srv,
					doc: "Workers wait before taking a job while the CPU load (percent, 1-100) is above this."},
				{name: "MIN_AVAILABLE_MEMORY_MB", typ: typeMiB, def: "500", min: 0, max: maxMiB, usedBy: srv,
					doc: "Workers wait before taking a job while available memory (MiB, as for MIN_FREE_DISK_MB) is below this."},
				{name: "RESOURCE_CHECK_INTERVAL_SECONDS", typ: typeSeconds, def: "10", dmin: time.Second, dmax: time.Hour, usedBy: srv,
					doc: "How often a waiting worker checks the resources again (at least 1)."},
			}},
			{title: "Monitoring (Server)", fields: []field{
				{name: "METRICS_ADDRESS", typ: typeAddr, def: "", usedBy: srv,
					doc: "host:port of a Prometheus metrics endpoint (/metrics), e.g. 127.0.0.1:9464; empty: off. It has no key, so only loopback is accepted: a loopback IP address, localhost, or a bare :PORT (127.0.0.1)."},
			}},
			{title: "PACS Delivery (Server)", fields: []field{
				{name: "PACS_DELIVERY", typ: typeString, def: "off", nonEmpty: true, usedBy: srv,
					doc: "Send every DICOM result of a succeeded job to the PACS: off, always, or on-request (only jobs submitted with the option deliver=pacs). See docs/PACS.md."},
				{name: "PACS_DICOMWEB_URL", typ: typeString, def: "", usedBy: srv,
					doc: "Base URL of the PACS's DICOMweb service for STOW-RS, e.g. http://pacs:8042/dicom-web (no credentials in it); empty: no DICOMweb destination."},
				{name: "PACS_USERNAME", typ: typeString, def: "", usedBy: srv,
					doc: "User name for HTTP basic auth to PACS_DICOMWEB_URL; empty: no auth."},
				{name: "PACS_PASSWORD_FILE", typ: typePath, def: "", usedBy: srv,
					doc: "File holding the password for PACS_USERNAME (trailing newline ignored); it must have mode 0600. Read at each delivery attempt, so a corrected password needs no restart."},
				{name: "PACS_CA_FILE", typ: typePath, def: "", usedBy: srv,
					doc: "PEM certificates to verify an https PACS_DICOMWEB_URL with; empty: the system's roots. TLS is always verified."},
				{name: "PACS_DIMSE_ADDRESS", typ: typeString, def: "", usedBy: srv,
					doc: "host:port of the PACS's DICOM listener for C-STORE (through dcmtk's storescu); empty: no DIMSE destination."},
				{name: "PACS_CALLED_AE", typ: typeString, def: "ANY-SCP", nonEmpty: true, usedBy: srv,
					doc: "AE title of the PACS for C-STORE (1-16 characters)."},
				{name: "PACS_CALLING_AE", typ: typeString, def: "RECON", nonEmpty: true, usedBy: srv,
					doc: "recon's own AE title for C-STORE (1-16 characters); the PACS may accept only the titles it knows."},
				{name: "PACS_RETRY_HOURS", typ: typeHours, def: "24", dmin: 36 * time.Second, dmax: 3650 * day, usedBy: srv,
					doc: "How long a delivery the PACS does not confirm is retried, with backoff, across restarts; then it is failed (recon admin redeliver starts it again)."},
			}},
			{title: "Cluster Execution (Server)", fields: []field{
				{name: "EXECUTOR", typ: typeString, def: "local", usedBy: srv,
					doc: "Where jobs run: local (the script runs on this machine) or slurm (each job is a Slurm batch job; see docs/SLURM.md)."},
				{name: "SLURM_PARTITION", typ: typeString, def: "", usedBy: srv,
					doc: "Slurm partition of the jobs (sbatch --partition); empty: the cluster's default."},
				{name: "SLURM_ACCOUNT", typ: typeString, def: "", usedBy: srv,
					doc: "Slurm account charged for the jobs (sbatch --account); empty: the user's default."},
				{name: "SLURM_QOS", typ: typeString, def: "", usedBy: srv,
					doc: "Slurm quality of service of the jobs (sbatch --qos); empty: the default."},
				{name: "SLURM_TIME_LIMIT_MINUTES", typ: typeString, def: "", usedBy: srv,
					doc: "Slurm time limit of one job in minutes (1-525600, sbatch --time); empty: JOB_TIMEOUT_SECONDS rounded up to minutes plus one, or Slurm's default when that is 0."},
				{name: "SLURM_CPUS_PER_JOB", typ: typeString, def: "", usedBy: srv,
					doc: "CPUs of one job (1-4096, sbatch --cpus-per-task); empty: Slurm's default."},
				{name: "SLURM_MEM_PER_JOB_MB", typ: typeString, def: "", usedBy: srv,
					doc: "Memory of one job in MB (1-16777216, sbatch --mem); empty: Slurm's default."},
				{name: "SLURM_GRES", typ: typeString, def: "", usedBy: srv,
					doc: "Generic resources of one job, e.g. gpu:1 (sbatch --gres); empty: none."},
				{name: "SLURM_EXTRA_ARGS", typ: typeString, def: "", usedBy: srv,
					doc: "More sbatch options, separated by spaces, each --name or --name=value from a fixed list (constraint, nodelist, exclude, reservation, nice, tmp, gpus, gpus-per-node, cpus-per-gpu, mem-per-cpu, mem-per-gpu, exclusive, hint, licenses, comment, begin); passed as arguments, never through a shell."},
				{name: "SLURM_POLL_INTERVAL_MS", typ: typeInt, def: "250", min: 20, max: 60000, usedBy: srv,
					doc: "How often (milliseconds, 20-60000) the server asks Slurm for the state of its jobs."},
				{name: "SLURM_OPTIONS_FROM_JOB", typ: typeString, def: "", usedBy: srv,
					doc: "Comma-separated job options a client may set to override the keys above for its job: slurm_gres, slurm_time_limit_minutes, slurm_partition, slurm_mem_mb; empty: none."},
			}},
			{title: "Server Admin Interface (recon admin)", fields: []field{
				{name: "SERVER_ADMIN_HOSTNAME", typ: typeHost, def: "127.0.0.1", nonEmpty: true, usedBy: srv | adm,
					doc: "Host name or IP address of the admin listener; keep it on loopback."},
				{name: "SERVER_ADMIN_PORT", typ: typePort, def: "60003", min: 0, max: maxPortDefault, usedBy: srv | adm,
					doc: "TCP port of the admin listener (0: pick a free port, for tests)."},
				{name: "SERVER_ADMIN_SHARED_KEY", typ: typeKey, usedBy: srv | adm,
					doc: "Key of the admin channel; MUST differ from SHARED_KEY."},
			}},
			{title: "Client Options (recon submit, status, queue, fetch)", fields: []field{
				{name: "CLIENT_DEFAULT_PFILE_NAME", typ: typeFileName, def: "P00000.7", usedBy: cli,
					doc: "File name of the default raw-data file (prototype option)."},
				{name: "CLIENT_DEFAULT_PFILE_PATH", typ: typePath, def: "", usedBy: cli,
					doc: "Raw-data file submitted when recon submit is given no FILE; empty: FILE arguments are needed."},
				{name: "CLIENT_DOWNLOAD_DIR", typ: typePath, def: "client_downloads", nonEmpty: true, usedBy: cli | wat,
					doc: "Directory results are downloaded under when no --output is given."},
			}, note: "Legacy options of the Python prototype (SCANNER_USERNAME, SCANNER_PASSWORD, SSH_PORT, " +
				"SOURCE_DATA_PATH, SCANNER_DICOM_SOURCE_DIR) are accepted and ignored."},
			{title: "Client Daemon Options (recon watch)", fields: []field{
				{name: "CLIENT_WATCH_DIRECTORY", typ: typePath, def: "", usedBy: wat,
					doc: "Directory recon watch watches for new raw-data files; recon watch needs it set."},
				{name: "CLIENT_WATCH_PATTERN", typ: typeGlob, def: "*.7", nonEmpty: true, usedBy: wat,
					doc: "File name pattern (a filepath.Match glob) of the files to submit; several separated by commas (*.cfl,*.hdr for BART pairs)."},
				{name: "CLIENT_DAEMON_POLL_INTERVAL", typ: typeSeconds, def: "10", dmin: time.Millisecond, dmax: day, usedBy: wat,
					doc: "Seconds between scans of the watched directory."},
				{name: "CLIENT_DAEMON_STABILITY_DELAY", typ: typeSeconds, def: "5", dmin: 0, dmax: day, usedBy: wat,
					doc: "Seconds a file's size and modification time must stay unchanged (and the file be readable) before it is taken as complete."},
				{name: "CLIENT_DAEMON_GROUPING_TIMEOUT", typ: typeSeconds, def: "5", dmin: 0, dmax: day, usedBy: wat,
					doc: "Seconds to wait for more files after one is complete: complete files that arrive within it of the previous one, and were written within it of each other, form one job."},
				{name: "CLIENT_DAEMON_RECON_OPTIONS_JSON", typ: typeJSONOptions, def: "{}", usedBy: wat,
					doc: "Options sent with each job: a JSON object of strings, numbers or booleans; put it in '...' if it contains '#'."},
				{name: "CLIENT_WATCH_DICOM_REF", typ: typeBool, def: "false", usedBy: wat,
					doc: "When true, files named *.dcm join groups too (besides CLIENT_WATCH_PATTERN), and a DICOM file (DICM at byte 128) in a group is that group's reference, as for recon submit --dicom-ref: its patient, study and frame of reference are sent as the job's identity options, and it is not uploaded."},
				{name: "CLIENT_DAEMON_STATE_DIR", typ: typePath, def: "watch_state", nonEmpty: true, usedBy: wat,
					doc: "Directory of recon watch's durable state (an SQLite database of the groups it found and their jobs); outside the watched directory, and not in /tmp."},
				{name: "CLIENT_DAEMON_MAX_JOB_ATTEMPTS", typ: typeInt, def: "1", min: 1, max: 10, usedBy: wat,
					doc: "Times recon watch submits a group whose job fails (1-10); 1 never retries a failed job. Cancelled jobs are never retried."},
				{name: "CLIENT_DAEMON_LOG_FILEPATH", typ: typePath, def: "", usedBy: wat,
					doc: "File recon watch appends its JSON log to; empty logs to standard error."},
			}},
		},
	})
}

func relaySchema() *schema {
	const rel, radm = progRelay, progRelayAdmin
	return newSchema(&schema{
		file:  "relay.opts",
		title: "relay.opts - configuration of recon relay and recon relay-admin",
		intro: "Format: one ITEM = VALUE per line; '#' starts a comment; quote a value that contains '#'. " +
			"Relative paths are relative to this file's directory. " +
			"This file holds secret keys: keep it private (mode 0600).",
		sections: []section{
			{title: "Relay Listener", fields: []field{
				{name: "RELAY_HOSTNAME", typ: typeHost, def: "localhost", nonEmpty: true, usedBy: rel,
					doc: "Host name or IP address the relay listens on for clients."},
				{name: "RELAY_PORT", typ: typePort, def: "60001", min: 0, max: maxPortDefault, usedBy: rel,
					doc: "TCP port of the relay for clients (0: pick a free port, for tests)."},
			}},
			{title: "Logging", fields: []field{
				{name: "LOG_FILEPATH", typ: typePath, def: "relay.log", usedBy: rel,
					doc: "File the relay appends its JSON log to; empty logs to standard error."},
				{name: "LOG_LEVEL", typ: typeLogLevel, def: "INFO", usedBy: rel,
					doc: "Least severe level logged: DEBUG, INFO, WARNING (or WARN), ERROR."},
			}},
			{title: "Security (Client-Facing)", fields: []field{
				{name: "SHARED_KEY_RELAY_TO_CLIENTS", typ: typeKey, optional: true, usedBy: rel,
					doc: "Key of the client-relay channel for the identity default; clients use it as their SHARED_KEY. It may be left empty only when CLIENT_KEYS_FILE is set."},
				{name: "CLIENT_KEYS_FILE", typ: typePath, def: "", usedBy: rel,
					doc: "File of client identities, as the server's CLIENT_KEYS_FILE: one NAME = KEY (or NAME = KEY1,KEY2) per line. The relay authenticates its clients with it and names each client's identity to backends that have RELAY_SHARED_KEY. SIGHUP and recon relay-admin reload read it again."},
				{name: "TRUSTED_CLIENT_IPS", typ: typeIPList, def: "", usedBy: rel,
					doc: "Comma-separated IP addresses and CIDR prefixes allowed to connect as clients; blank allows every address."},
			}},
			{title: "Backend Reconstruction Servers", fields: []field{
				{name: "BACKEND_SERVERS", typ: typeHostPorts, def: "localhost:60000", nonEmpty: true, usedBy: rel,
					doc: "Comma-separated host:port list of the recon servers the relay forwards jobs to."},
				{name: "BACKEND_SHARED_KEY", typ: typeKey, optional: true, usedBy: rel,
					doc: "Key toward the backends: their RELAY_SHARED_KEY (or, on a backend without one, a client key, whose identity then owns every job through the relay). The relay cannot reach them while it is unset."},
				{name: "BACKEND_HEALTH_INTERVAL_SECONDS", typ: typeSeconds, def: "2", dmin: 100 * time.Millisecond, dmax: time.Hour, usedBy: rel,
					doc: "Seconds between health checks (a status request) of each backend; a backend that fails one is skipped until one passes."},
				{name: "HANDSHAKE_TIMEOUT_SECONDS", typ: typeSeconds, def: "10", dmin: time.Second, dmax: time.Hour, usedBy: rel,
					doc: "A client or admin connection that has not completed the encrypted handshake (proved its key) this long after it was accepted is closed."},
				{name: "IDLE_TIMEOUT_SECONDS", typ: typeSeconds, def: "300", dmin: time.Second, dmax: day, usedBy: rel,
					doc: "A client session with no request, or a backend or client that makes no progress in a transfer or reply, for this long is given up; keep it above 30 (backends send a waiting client its job's state every 30 s)."},
			}},
			{title: "Relay State", fields: []field{
				{name: "RELAY_STATE_DIR", typ: typePath, def: "relay_data/state", nonEmpty: true, usedBy: rel,
					doc: "Directory of the relay's durable state (the SQLite map of which backend holds which job); keep it out of /tmp."},
			}},
			{title: "Relay Admin Interface (recon relay-admin)", fields: []field{
				{name: "RELAY_ADMIN_HOSTNAME", typ: typeHost, def: "127.0.0.1", nonEmpty: true, usedBy: rel | radm,
					doc: "Host name or IP address of the relay's admin listener; keep it on loopback."},
				{name: "RELAY_ADMIN_PORT", typ: typePort, def: "60002", min: 0, max: maxPortDefault, usedBy: rel | radm,
					doc: "TCP port of the relay's admin listener (0: pick a free port, for tests)."},
				{name: "RELAY_ADMIN_SHARED_KEY", typ: typeKey, usedBy: rel | radm,
					doc: "Key of the relay's admin channel; MUST differ from SHARED_KEY_RELAY_TO_CLIENTS and BACKEND_SHARED_KEY."},
			}},
		},
	})
}

// The two schemas, built once and never modified.
var (
	reconOpts = reconSchema()
	relayOpts = relaySchema()
)

// other returns the other kind of file's schema, for "belongs in" hints.
func (s *schema) other() *schema {
	if s == reconOpts {
		return relayOpts
	}
	return reconOpts
}
