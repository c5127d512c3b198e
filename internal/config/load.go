package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/keys"
)

// Warning is a problem in a config file that does not stop the program: an
// unknown key, a legacy key, a file others can read. Line is 0 when it
// concerns the whole file.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", w.File, w.Line, w.Msg)
	}
	return w.File + ": " + w.Msg
}

// Server is the configuration of `recon server`, from recon.opts. Paths are
// absolute (relative ones in the file are resolved against its directory).
type Server struct {
	Path string // the file it came from, as given

	Hostname   string          // SERVER_HOSTNAME
	Port       int             // SERVER_PORT; 0 picks a free port
	SharedKey  keys.Key        // SHARED_KEY; zero when unset (CLIENT_KEYS_FILE is then set)
	TrustedIPs *allowlist.List // TRUSTED_IPS; nil allows every address

	ClientKeysFile         string   // CLIENT_KEYS_FILE; "" for none (read by Identities)
	RelaySharedKey         keys.Key // RELAY_SHARED_KEY; zero when unset
	MaxQueuedJobsPerClient int      // MAX_QUEUED_JOBS_PER_CLIENT; 0 means MaxQueuedJobs

	InputBaseDir  string // RECON_SERVER_BASE_PFILE_DIR
	ScriptPath    string // RECON_SCRIPT_PATH
	OutputBaseDir string // RECON_JOB_OUTPUT_BASE_DIR
	StateDir      string // RECON_SERVER_STATE_DIR

	LogFile  string     // LOG_FILEPATH; "" logs to standard error
	LogLevel slog.Level // LOG_LEVEL
	// AuditLogFile is AUDIT_LOG_FILEPATH; "" is the default (AuditLogPath).
	AuditLogFile string

	HandshakeTimeout  time.Duration // HANDSHAKE_TIMEOUT_SECONDS
	IdleTimeout       time.Duration // IDLE_TIMEOUT_SECONDS
	MaxConcurrentJobs int           // MAX_CONCURRENT_JOBS
	MaxQueuedJobs     int           // MAX_QUEUED_JOBS
	MaxFilesPerJob    int           // MAX_FILES_PER_JOB
	MaxJobInputBytes  int64         // MAX_JOB_INPUT_BYTES
	MinFreeDiskBytes  int64         // MIN_FREE_DISK_MB, in bytes
	MaxJobAttempts    int           // MAX_JOB_ATTEMPTS
	JobTimeout        time.Duration // JOB_TIMEOUT_SECONDS; 0 means none
	KillGrace         time.Duration // KILL_GRACE_SECONDS
	ResultRetention   time.Duration // RESULT_RETENTION_HOURS
	UploadResume      time.Duration // UPLOAD_RESUME_HOURS; 0 means broken uploads are not kept
	MaxResultFiles    int           // MAX_RESULT_FILES
	MaxResultBytes    int64         // MAX_RESULT_BYTES

	// Caps on the disk space held for clients; 0 means the default share
	// of the input disk (see the keys' docs and server.spaceCaps).
	MaxReservedPerClient   int64 // MAX_RESERVED_BYTES_PER_CLIENT
	MaxKeptUploadPerClient int64 // MAX_KEPT_UPLOAD_BYTES_PER_CLIENT
	MaxKeptUploadBytes     int64 // MAX_KEPT_UPLOAD_BYTES
	KeepFailedOutputs      bool  // KEEP_FAILED_OUTPUTS

	DICOMUIDRoot string // DICOM_UID_ROOT, for the script's RECON_DICOM_UID_ROOT

	MaxCPULoadPercent       int           // MAX_CPU_LOAD_PERCENT
	MinAvailableMemoryBytes int64         // MIN_AVAILABLE_MEMORY_MB, in bytes
	ResourceCheckInterval   time.Duration // RESOURCE_CHECK_INTERVAL_SECONDS

	MetricsAddress string // METRICS_ADDRESS; "" when metrics are off

	PACS PACS // PACS_* keys

	AdminHostname  string   // SERVER_ADMIN_HOSTNAME
	AdminPort      int      // SERVER_ADMIN_PORT; 0 picks a free port
	AdminSharedKey keys.Key // SERVER_ADMIN_SHARED_KEY

	Executor string // EXECUTOR: "local" or "slurm"
	Slurm    Slurm  // the SLURM_* keys (slurm.go)
}

// Addr is the client listener's address, host:port.
func (c *Server) Addr() string { return joinHostPort(c.Hostname, c.Port) }

// AdminAddr is the admin listener's address, host:port.
func (c *Server) AdminAddr() string { return joinHostPort(c.AdminHostname, c.AdminPort) }

// Client is the configuration of the clients (`recon submit`, `status`,
// `queue`, `fetch`) and of `recon watch`, from recon.opts. Only
// SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY need be in the file.
type Client struct {
	Path string // the file it came from, as given

	Hostname  string   // SERVER_HOSTNAME
	Port      int      // SERVER_PORT (never 0)
	SharedKey keys.Key // SHARED_KEY

	DefaultPfileName string // CLIENT_DEFAULT_PFILE_NAME
	DefaultPfilePath string // CLIENT_DEFAULT_PFILE_PATH; "" for none
	DownloadDir      string // CLIENT_DOWNLOAD_DIR

	WatchDir        string            // CLIENT_WATCH_DIRECTORY; "" when unset
	WatchPattern    string            // CLIENT_WATCH_PATTERN, a valid filepath.Match pattern
	WatchDICOMRef   bool              // CLIENT_WATCH_DICOM_REF
	PollInterval    time.Duration     // CLIENT_DAEMON_POLL_INTERVAL
	StabilityDelay  time.Duration     // CLIENT_DAEMON_STABILITY_DELAY
	GroupingTimeout time.Duration     // CLIENT_DAEMON_GROUPING_TIMEOUT
	ReconOptions    map[string]string // CLIENT_DAEMON_RECON_OPTIONS_JSON; never nil
	WatchStateDir   string            // CLIENT_DAEMON_STATE_DIR
	WatchAttempts   int               // CLIENT_DAEMON_MAX_JOB_ATTEMPTS; 1 never retries a failed job
	WatchLogFile    string            // CLIENT_DAEMON_LOG_FILEPATH; "" logs to standard error
}

// Addr is the server's address, host:port.
func (c *Client) Addr() string { return joinHostPort(c.Hostname, c.Port) }

// Admin is the configuration of `recon admin`, from recon.opts. Only the
// SERVER_ADMIN_* keys are read.
type Admin struct {
	Path string // the file it came from, as given

	Hostname  string   // SERVER_ADMIN_HOSTNAME
	Port      int      // SERVER_ADMIN_PORT (never 0)
	SharedKey keys.Key // SERVER_ADMIN_SHARED_KEY
}

// Addr is the admin listener's address, host:port.
func (c *Admin) Addr() string { return joinHostPort(c.Hostname, c.Port) }

// Relay is the configuration of `recon relay`, from relay.opts.
type Relay struct {
	Path string // the file it came from, as given

	Hostname string // RELAY_HOSTNAME
	Port     int    // RELAY_PORT; 0 picks a free port

	LogFile  string     // LOG_FILEPATH; "" logs to standard error
	LogLevel slog.Level // LOG_LEVEL

	ClientSharedKey  keys.Key        // SHARED_KEY_RELAY_TO_CLIENTS; zero when unset (CLIENT_KEYS_FILE is then set)
	ClientKeysFile   string          // CLIENT_KEYS_FILE; "" for none (read by Identities)
	TrustedClientIPs *allowlist.List // TRUSTED_CLIENT_IPS; nil allows every address

	BackendServers   []string      // BACKEND_SERVERS, each host:port (IPv6 in brackets)
	BackendSharedKey keys.Key      // BACKEND_SHARED_KEY; zero when unset (LoadRelay warns)
	HealthInterval   time.Duration // BACKEND_HEALTH_INTERVAL_SECONDS
	HandshakeTimeout time.Duration // HANDSHAKE_TIMEOUT_SECONDS
	IdleTimeout      time.Duration // IDLE_TIMEOUT_SECONDS

	StateDir string // RELAY_STATE_DIR

	AdminHostname  string   // RELAY_ADMIN_HOSTNAME
	AdminPort      int      // RELAY_ADMIN_PORT; 0 picks a free port
	AdminSharedKey keys.Key // RELAY_ADMIN_SHARED_KEY
}

// Addr is the client listener's address, host:port.
func (c *Relay) Addr() string { return joinHostPort(c.Hostname, c.Port) }

// AdminAddr is the admin listener's address, host:port.
func (c *Relay) AdminAddr() string { return joinHostPort(c.AdminHostname, c.AdminPort) }

// RelayAdmin is the configuration of `recon relay-admin`, from relay.opts.
// Only the RELAY_ADMIN_* keys are read.
type RelayAdmin struct {
	Path string // the file it came from, as given

	Hostname  string   // RELAY_ADMIN_HOSTNAME
	Port      int      // RELAY_ADMIN_PORT (never 0)
	SharedKey keys.Key // RELAY_ADMIN_SHARED_KEY
}

// Addr is the relay admin listener's address, host:port.
func (c *RelayAdmin) Addr() string { return joinHostPort(c.Hostname, c.Port) }

func joinHostPort(h string, p int) string { return net.JoinHostPort(h, strconv.Itoa(p)) }

// LoadServer reads the server's configuration from a recon.opts file.
//
// A missing file gives an error wrapping fs.ErrNotExist (see
// WriteDefaultServer). Errors in the file are *ParseError values naming
// file:line, joined with errors.Join when there are several; they never
// contain a key. Warnings (unknown or legacy keys, a file that others can
// read) are returned whenever the file could be parsed, also with an error.
func LoadServer(path string) (*Server, []Warning, error) {
	return load(path, reconOpts, buildServer)
}

// LoadClient reads a client's configuration from a recon.opts file. It needs
// only SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY; the other keys it reads
// have defaults, and keys of other programs are neither checked nor warned
// about. Errors and warnings are as for LoadServer.
func LoadClient(path string) (*Client, []Warning, error) {
	return load(path, reconOpts, buildClient)
}

// LoadAdmin reads the configuration of `recon admin` from a recon.opts file.
// It needs only SERVER_ADMIN_SHARED_KEY. Errors and warnings are as for
// LoadServer.
func LoadAdmin(path string) (*Admin, []Warning, error) {
	return load(path, reconOpts, buildAdmin)
}

// LoadRelay reads the relay's configuration from a relay.opts file. Errors
// and warnings are as for LoadServer; an unset BACKEND_SHARED_KEY is a
// warning.
func LoadRelay(path string) (*Relay, []Warning, error) {
	return load(path, relayOpts, buildRelay)
}

// LoadRelayAdmin reads the configuration of `recon relay-admin` from a
// relay.opts file. It needs only RELAY_ADMIN_SHARED_KEY. Errors and warnings
// are as for LoadServer.
func LoadRelayAdmin(path string) (*RelayAdmin, []Warning, error) {
	return load(path, relayOpts, buildRelayAdmin)
}

func load[T any](path string, sch *schema, build func(*source) *T) (*T, []Warning, error) {
	src, err := openSource(path, sch)
	if err != nil {
		return nil, nil, err
	}
	c := build(src)
	if err := src.err(); err != nil {
		return nil, src.warns, err
	}
	return c, src.warns, nil
}

// source is a parsed config file being read into a typed config.
type source struct {
	path    string // as given, for messages
	dir     string // absolute directory for relative paths
	sch     *schema
	entries map[string]Entry
	errs    []error
	failed  map[string]bool // keys whose value was refused
	read    map[string]bool // keys the loader asked for
	warns   []Warning
	keyHelp map[string]string // advice for a missing key, by key (keyhelp.go)
}

// openSource reads and parses a config file.
func openSource(path string, sch *schema) (*source, error) {
	// Stat before opening, so that a FIFO or device is refused, not read.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err // an *fs.PathError naming the file; wraps fs.ErrNotExist if missing
	}
	if !fi.Mode().IsRegular() {
		return nil, &ParseError{File: path, Msg: "not a regular file"}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > MaxFileSize {
		return nil, &ParseError{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var first []Warning
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o066 != 0 {
		first = append(first, Warning{File: path, Msg: fmt.Sprintf(
			"file mode is %#o: other users can read or change it, and it holds secret keys (chmod 600 it)", perm)})
	}
	src, err := newSource(path, filepath.Dir(abs), data, sch)
	if err != nil {
		return nil, err
	}
	src.warns = append(first, src.warns...)
	return src, nil
}

// newSource parses data, the contents of the file called name in directory
// dir, and warns about keys that sch does not know.
func newSource(name, dir string, data []byte, sch *schema) (*source, error) {
	if len(data) > MaxFileSize {
		return nil, &ParseError{File: name, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	entries, err := parseData(name, data)
	if err != nil {
		return nil, err
	}
	s := &source{
		path:    name,
		dir:     dir,
		sch:     sch,
		entries: make(map[string]Entry, len(entries)),
		failed:  map[string]bool{},
		read:    map[string]bool{},
	}
	for _, e := range entries {
		s.entries[e.Key] = e
		if sch.field(e.Key) != nil {
			continue
		}
		var msg string
		switch {
		case sch.isLegacy(e.Key):
			msg = fmt.Sprintf("%s is a key of the Python prototype that recon does not use; it is ignored", e.Key)
		case sch.other().field(e.Key) != nil:
			msg = fmt.Sprintf("unknown key %s (it belongs in %s)", e.Key, sch.other().file)
		default:
			msg = "unknown key " + e.Key
			if near := sch.nearest(e.Key); near != "" {
				msg += " (did you mean " + near + "?)"
			}
		}
		s.warns = append(s.warns, Warning{File: name, Line: e.Line, Msg: msg})
	}
	return s, nil
}

// nearest returns the known key closest to name, if one is close enough to
// be a likely typo.
func (s *schema) nearest(name string) string {
	best, bestD := "", max(2, len(name)/4)+1
	for _, sec := range s.sections {
		for _, f := range sec.fields {
			if d := editDistance(name, f.name); d < bestD {
				best, bestD = f.name, d
			}
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of neighbours each cost 1.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// line is the line of key name in the file, or 0 if it is not there.
func (s *source) line(name string) int { return s.entries[name].Line }

func (s *source) fail(line int, format string, args ...any) {
	s.errs = append(s.errs, &ParseError{File: s.path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (s *source) err() error {
	switch len(s.errs) {
	case 0:
		return nil
	case 1:
		return s.errs[0]
	}
	return errors.Join(s.errs...)
}

// value reads key name: its value in the file, else its default. It
// returns nil after recording an error, and for an unset optional key.
func (s *source) value(name string) any {
	f := s.sch.field(name)
	if f == nil {
		panic("config: loader reads unknown key " + name)
	}
	s.read[name] = true
	e, ok := s.entries[name]
	raw, line := f.def, 0
	if ok {
		raw, line = e.Value, e.Line
	}
	if f.typ == typeKey && (!ok || f.optional && strings.TrimSpace(raw) == "") {
		if !f.optional {
			s.failed[name] = true
			s.fail(0, "%s", s.missingKeyMsg(name))
		}
		return nil
	}
	v, verr := parseValue(f, raw, s.dir)
	if verr != nil {
		s.failed[name] = true
		s.errs = append(s.errs, &ParseError{File: s.path, Line: line, Msg: name + " " + verr.msg, Err: verr.err})
		return nil
	}
	return v
}

// get reads key name as a T: the type parseValue gives for its field type.
func get[T any](s *source, name string) T {
	v := s.value(name)
	if v == nil {
		var zero T
		return zero
	}
	return v.(T) // a mismatch is a bug in this package, caught by its tests
}

// distinctKeys refuses two roles that share a key; ks[i] is the key named
// names[i] (zero when unset or refused). The error names both keys and is at
// the line of the later one.
func (s *source) distinctKeys(names []string, ks []keys.Key) {
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if ks[i].IsZero() || ks[j].IsZero() || !ks[i].Equal(ks[j]) {
				continue
			}
			a, b := names[i], names[j]
			if s.line(a) > s.line(b) {
				a, b = b, a
			}
			s.fail(s.line(b), "%s and %s are the same key; each role needs its own: generate another with recon keygen", a, b)
		}
	}
}

// requireKey refuses an unset optional key that this program needs,
// with the errors a required key gets.
func (s *source) requireKey(name string) {
	if s.failed[name] || s.value(name) != nil {
		return
	}
	s.failed[name] = true
	e, ok := s.entries[name]
	if !ok {
		s.fail(0, "%s", s.missingKeyMsg(name))
		return
	}
	if _, verr := parseValue(s.sch.field(name), e.Value, s.dir); verr != nil {
		s.errs = append(s.errs, &ParseError{File: s.path, Line: e.Line, Msg: name + " " + verr.msg, Err: verr.err})
	}
}

// distinctListeners refuses two listeners on the same host and port.
func (s *source) distinctListeners(hostA, portA, hostB, portB string, ha string, pa int, hb string, pb int) {
	if pa == 0 || pa != pb || ha != hb || s.failed[portA] || s.failed[portB] {
		return
	}
	s.fail(max(s.line(portA), s.line(portB)), "%s and %s are both %d on %s (%s, %s)", portA, portB, pa, ha, hostA, hostB)
}

// dialPort refuses port 0 for a program that connects.
func (s *source) dialPort(name string, p int) {
	if p == 0 && !s.failed[name] {
		s.fail(s.line(name), "%s is 0 (\"pick a free port\", for a listener); a client needs the port the listener is on", name)
	}
}

// separateDirs refuses directories that are equal or nested: a cleanup of
// one must never reach into another.
func (s *source) separateDirs(names []string, dirs []string) {
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if dirs[i] == "" || dirs[j] == "" || !(within(dirs[i], dirs[j]) || within(dirs[j], dirs[i])) {
				continue
			}
			s.fail(max(s.line(names[i]), s.line(names[j])),
				"%s and %s must be separate directories, neither inside the other", names[i], names[j])
		}
	}
}

func within(p, dir string) bool {
	if p == dir {
		return true
	}
	rel, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(rel)
}

// AuditLogPath is the audit trail's file: AUDIT_LOG_FILEPATH, or else
// recon_audit.jsonl beside LOG_FILEPATH, or in RECON_SERVER_STATE_DIR
// when the server logs to standard error.
func (c *Server) AuditLogPath() string {
	switch {
	case c.AuditLogFile != "":
		return c.AuditLogFile
	case c.LogFile != "":
		return filepath.Join(filepath.Dir(c.LogFile), "recon_audit.jsonl")
	}
	return filepath.Join(c.StateDir, "recon_audit.jsonl")
}

func buildServer(s *source) *Server {
	c := &Server{
		Path:                    s.path,
		Hostname:                get[string](s, "SERVER_HOSTNAME"),
		Port:                    get[int](s, "SERVER_PORT"),
		SharedKey:               get[keys.Key](s, "SHARED_KEY"),
		TrustedIPs:              get[*allowlist.List](s, "TRUSTED_IPS"),
		InputBaseDir:            get[string](s, "RECON_SERVER_BASE_PFILE_DIR"),
		ScriptPath:              get[string](s, "RECON_SCRIPT_PATH"),
		OutputBaseDir:           get[string](s, "RECON_JOB_OUTPUT_BASE_DIR"),
		StateDir:                get[string](s, "RECON_SERVER_STATE_DIR"),
		LogFile:                 get[string](s, "LOG_FILEPATH"),
		LogLevel:                get[slog.Level](s, "LOG_LEVEL"),
		AuditLogFile:            get[string](s, "AUDIT_LOG_FILEPATH"),
		HandshakeTimeout:        get[time.Duration](s, "HANDSHAKE_TIMEOUT_SECONDS"),
		IdleTimeout:             get[time.Duration](s, "IDLE_TIMEOUT_SECONDS"),
		MaxConcurrentJobs:       get[int](s, "MAX_CONCURRENT_JOBS"),
		MaxQueuedJobs:           get[int](s, "MAX_QUEUED_JOBS"),
		MaxFilesPerJob:          get[int](s, "MAX_FILES_PER_JOB"),
		MaxJobInputBytes:        get[int64](s, "MAX_JOB_INPUT_BYTES"),
		MinFreeDiskBytes:        get[int64](s, "MIN_FREE_DISK_MB"),
		MaxJobAttempts:          get[int](s, "MAX_JOB_ATTEMPTS"),
		JobTimeout:              get[time.Duration](s, "JOB_TIMEOUT_SECONDS"),
		KillGrace:               get[time.Duration](s, "KILL_GRACE_SECONDS"),
		ResultRetention:         get[time.Duration](s, "RESULT_RETENTION_HOURS"),
		UploadResume:            get[time.Duration](s, "UPLOAD_RESUME_HOURS"),
		MaxResultFiles:          get[int](s, "MAX_RESULT_FILES"),
		MaxResultBytes:          get[int64](s, "MAX_RESULT_BYTES"),
		MaxReservedPerClient:    get[int64](s, "MAX_RESERVED_BYTES_PER_CLIENT"),
		MaxKeptUploadPerClient:  get[int64](s, "MAX_KEPT_UPLOAD_BYTES_PER_CLIENT"),
		MaxKeptUploadBytes:      get[int64](s, "MAX_KEPT_UPLOAD_BYTES"),
		KeepFailedOutputs:       get[bool](s, "KEEP_FAILED_OUTPUTS"),
		DICOMUIDRoot:            get[string](s, "DICOM_UID_ROOT"),
		MaxCPULoadPercent:       get[int](s, "MAX_CPU_LOAD_PERCENT"),
		MinAvailableMemoryBytes: get[int64](s, "MIN_AVAILABLE_MEMORY_MB"),
		ResourceCheckInterval:   get[time.Duration](s, "RESOURCE_CHECK_INTERVAL_SECONDS"),
		MetricsAddress:          get[string](s, "METRICS_ADDRESS"),
		AdminHostname:           get[string](s, "SERVER_ADMIN_HOSTNAME"),
		AdminPort:               get[int](s, "SERVER_ADMIN_PORT"),
		AdminSharedKey:          get[keys.Key](s, "SERVER_ADMIN_SHARED_KEY"),
		ClientKeysFile:          get[string](s, "CLIENT_KEYS_FILE"),
		RelaySharedKey:          get[keys.Key](s, "RELAY_SHARED_KEY"),
		MaxQueuedJobsPerClient:  get[int](s, "MAX_QUEUED_JOBS_PER_CLIENT"),
	}
	c.PACS = buildPACS(s)
	c.Executor, c.Slurm = buildSlurm(s)
	if c.ClientKeysFile == "" {
		s.requireKey("SHARED_KEY")
	}
	s.distinctKeys([]string{"SHARED_KEY", "SERVER_ADMIN_SHARED_KEY", "RELAY_SHARED_KEY"}, []keys.Key{c.SharedKey, c.AdminSharedKey, c.RelaySharedKey})
	s.distinctListeners("SERVER_HOSTNAME", "SERVER_PORT", "SERVER_ADMIN_HOSTNAME", "SERVER_ADMIN_PORT",
		c.Hostname, c.Port, c.AdminHostname, c.AdminPort)
	s.separateDirs(
		[]string{"RECON_SERVER_BASE_PFILE_DIR", "RECON_JOB_OUTPUT_BASE_DIR", "RECON_SERVER_STATE_DIR"},
		[]string{c.InputBaseDir, c.OutputBaseDir, c.StateDir})
	if c.AuditLogFile != "" && c.AuditLogFile == c.LogFile {
		s.fail(s.line("AUDIT_LOG_FILEPATH"), "AUDIT_LOG_FILEPATH is LOG_FILEPATH; the audit trail needs a file of its own")
	}
	return c
}

func buildClient(s *source) *Client {
	s.keyHelp = clientKeyHelp
	c := &Client{
		Path:             s.path,
		Hostname:         get[string](s, "SERVER_HOSTNAME"),
		Port:             get[int](s, "SERVER_PORT"),
		SharedKey:        get[keys.Key](s, "SHARED_KEY"),
		DefaultPfileName: get[string](s, "CLIENT_DEFAULT_PFILE_NAME"),
		DefaultPfilePath: get[string](s, "CLIENT_DEFAULT_PFILE_PATH"),
		DownloadDir:      get[string](s, "CLIENT_DOWNLOAD_DIR"),
		WatchDir:         get[string](s, "CLIENT_WATCH_DIRECTORY"),
		WatchPattern:     get[string](s, "CLIENT_WATCH_PATTERN"),
		WatchDICOMRef:    get[bool](s, "CLIENT_WATCH_DICOM_REF"),
		PollInterval:     get[time.Duration](s, "CLIENT_DAEMON_POLL_INTERVAL"),
		StabilityDelay:   get[time.Duration](s, "CLIENT_DAEMON_STABILITY_DELAY"),
		GroupingTimeout:  get[time.Duration](s, "CLIENT_DAEMON_GROUPING_TIMEOUT"),
		ReconOptions:     get[map[string]string](s, "CLIENT_DAEMON_RECON_OPTIONS_JSON"),
		WatchStateDir:    get[string](s, "CLIENT_DAEMON_STATE_DIR"),
		WatchAttempts:    get[int](s, "CLIENT_DAEMON_MAX_JOB_ATTEMPTS"),
		WatchLogFile:     get[string](s, "CLIENT_DAEMON_LOG_FILEPATH"),
	}
	s.requireKey("SHARED_KEY")
	s.dialPort("SERVER_PORT", c.Port)
	return c
}

func buildAdmin(s *source) *Admin {
	s.keyHelp = adminKeyHelp
	c := &Admin{
		Path:      s.path,
		Hostname:  get[string](s, "SERVER_ADMIN_HOSTNAME"),
		Port:      get[int](s, "SERVER_ADMIN_PORT"),
		SharedKey: get[keys.Key](s, "SERVER_ADMIN_SHARED_KEY"),
	}
	s.dialPort("SERVER_ADMIN_PORT", c.Port)
	return c
}

func buildRelay(s *source) *Relay {
	c := &Relay{
		Path:             s.path,
		Hostname:         get[string](s, "RELAY_HOSTNAME"),
		Port:             get[int](s, "RELAY_PORT"),
		LogFile:          get[string](s, "LOG_FILEPATH"),
		LogLevel:         get[slog.Level](s, "LOG_LEVEL"),
		ClientSharedKey:  get[keys.Key](s, "SHARED_KEY_RELAY_TO_CLIENTS"),
		TrustedClientIPs: get[*allowlist.List](s, "TRUSTED_CLIENT_IPS"),
		BackendServers:   get[[]string](s, "BACKEND_SERVERS"),
		BackendSharedKey: get[keys.Key](s, "BACKEND_SHARED_KEY"),
		HealthInterval:   get[time.Duration](s, "BACKEND_HEALTH_INTERVAL_SECONDS"),
		HandshakeTimeout: get[time.Duration](s, "HANDSHAKE_TIMEOUT_SECONDS"),
		IdleTimeout:      get[time.Duration](s, "IDLE_TIMEOUT_SECONDS"),
		StateDir:         get[string](s, "RELAY_STATE_DIR"),
		AdminHostname:    get[string](s, "RELAY_ADMIN_HOSTNAME"),
		AdminPort:        get[int](s, "RELAY_ADMIN_PORT"),
		AdminSharedKey:   get[keys.Key](s, "RELAY_ADMIN_SHARED_KEY"),
		ClientKeysFile:   get[string](s, "CLIENT_KEYS_FILE"),
	}
	if c.ClientKeysFile == "" {
		s.requireKey("SHARED_KEY_RELAY_TO_CLIENTS")
	}
	s.distinctKeys([]string{"SHARED_KEY_RELAY_TO_CLIENTS", "RELAY_ADMIN_SHARED_KEY", "BACKEND_SHARED_KEY"},
		[]keys.Key{c.ClientSharedKey, c.AdminSharedKey, c.BackendSharedKey})
	s.distinctListeners("RELAY_HOSTNAME", "RELAY_PORT", "RELAY_ADMIN_HOSTNAME", "RELAY_ADMIN_PORT",
		c.Hostname, c.Port, c.AdminHostname, c.AdminPort)
	if c.BackendSharedKey.IsZero() && !s.failed["BACKEND_SHARED_KEY"] {
		s.warns = append(s.warns, Warning{File: s.path, Line: s.line("BACKEND_SHARED_KEY"),
			Msg: "BACKEND_SHARED_KEY is not set: the relay cannot reach its backends until it is set to their SHARED_KEY"})
	}
	return c
}

func buildRelayAdmin(s *source) *RelayAdmin {
	s.keyHelp = relayAdminKeyHelp
	c := &RelayAdmin{
		Path:      s.path,
		Hostname:  get[string](s, "RELAY_ADMIN_HOSTNAME"),
		Port:      get[int](s, "RELAY_ADMIN_PORT"),
		SharedKey: get[keys.Key](s, "RELAY_ADMIN_SHARED_KEY"),
	}
	s.dialPort("RELAY_ADMIN_PORT", c.Port)
	return c
}
