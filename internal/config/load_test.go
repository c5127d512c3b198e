package config_test

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
)

// expand replaces {F} with the file's path and {D} with its directory.
func expand(s, path string) string {
	return strings.NewReplacer("{F}", path, "{D}", filepath.Dir(path)).Replace(s)
}

func TestLoadServer(t *testing.T) {
	k1, k2, k3 := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	base := lines("SHARED_KEY = "+testKeyText(1), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)) // lines 1 and 2
	tests := []struct {
		name    string
		file    string                             // whole file; base + extra when empty
		extra   string                             // lines 3…
		mod     func(c *config.Server, dir string) // changes from the defaults
		wantErr string                             // whole error text, {F} for the path
	}{
		{name: "defaults", mod: func(*config.Server, string) {}},
		{name: "port 0 picks a free port", extra: "SERVER_PORT = 0", mod: func(c *config.Server, _ string) { c.Port = 0 }},
		{name: "quoted port", extra: `SERVER_PORT = "61000"`, mod: func(c *config.Server, _ string) { c.Port = 61000 }},
		{name: "port too big", extra: "SERVER_PORT = 65536", wantErr: `{F}:3: SERVER_PORT must be a port number from 0 to 65535 (got "65536")`},
		{name: "port negative", extra: "SERVER_PORT = -1", wantErr: `{F}:3: SERVER_PORT must be a port number from 0 to 65535 (got "-1")`},
		{name: "port bool", extra: "SERVER_PORT = true", wantErr: `{F}:3: SERVER_PORT must be a port number from 0 to 65535 (got "true")`},
		{name: "port text", extra: "SERVER_PORT = http", wantErr: `{F}:3: SERVER_PORT must be a port number from 0 to 65535 (got "http")`},
		{name: "lower-case key", extra: "server_port = 6000", mod: func(c *config.Server, _ string) { c.Port = 6000 }},
		{name: "hostname IPv6", extra: "SERVER_HOSTNAME = ::1", mod: func(c *config.Server, _ string) { c.Hostname = "::1" }},
		{name: "hostname IPv6 brackets", extra: "SERVER_HOSTNAME = [::1]", mod: func(c *config.Server, _ string) { c.Hostname = "::1" }},
		{name: "hostname name", extra: "SERVER_HOSTNAME = recon-1.example_site.org", mod: func(c *config.Server, _ string) { c.Hostname = "recon-1.example_site.org" }},
		{name: "hostname bad", extra: "SERVER_HOSTNAME = bad host", wantErr: `{F}:3: SERVER_HOSTNAME must be a host name or an IP address (got "bad host")`},
		{name: "hostname empty", extra: "SERVER_HOSTNAME =", wantErr: `{F}:3: SERVER_HOSTNAME must not be empty`},
		{name: "trusted IPs blank", extra: "TRUSTED_IPS =", mod: func(c *config.Server, _ string) { c.TrustedIPs = nil }},
		{name: "trusted IPs CIDR", extra: "TRUSTED_IPS = 10.0.0.0/8, 127.0.0.1 # site",
			mod: func(c *config.Server, _ string) { c.TrustedIPs = mustAllowlist(t, "10.0.0.0/8,127.0.0.1") }},
		{name: "trusted IPs bad entry", extra: "TRUSTED_IPS = 127.0.0.1, nope",
			wantErr: `{F}:3: TRUSTED_IPS must be a comma-separated list of IP addresses and CIDR prefixes: allow-list entry "nope": not an IP address or CIDR prefix`},
		{name: "trusted IPs holding a key", extra: "TRUSTED_IPS = " + testKeyText(3),
			wantErr: `{F}:3: TRUSTED_IPS must be a comma-separated list of IP addresses and CIDR prefixes (value not shown)`},
		{name: "log level debug", extra: "LOG_LEVEL = debug", mod: func(c *config.Server, _ string) { c.LogLevel = slog.LevelDebug }},
		{name: "log level WARNING", extra: "LOG_LEVEL = WARNING", mod: func(c *config.Server, _ string) { c.LogLevel = slog.LevelWarn }},
		{name: "log level warn", extra: "LOG_LEVEL = Warn", mod: func(c *config.Server, _ string) { c.LogLevel = slog.LevelWarn }},
		{name: "log level ERROR", extra: "LOG_LEVEL = ERROR", mod: func(c *config.Server, _ string) { c.LogLevel = slog.LevelError }},
		{name: "log level bad", extra: "LOG_LEVEL = VERBOSE", wantErr: `{F}:3: LOG_LEVEL must be DEBUG, INFO, WARNING, WARN or ERROR (got "VERBOSE")`},
		{name: "log to stderr", extra: "LOG_FILEPATH =", mod: func(c *config.Server, _ string) { c.LogFile = "" }},
		{name: "max jobs", extra: "MAX_CONCURRENT_JOBS = 4", mod: func(c *config.Server, _ string) { c.MaxConcurrentJobs = 4 }},
		{name: "max jobs 0", extra: "MAX_CONCURRENT_JOBS = 0", wantErr: `{F}:3: MAX_CONCURRENT_JOBS must be an integer from 1 to 1024 (got "0")`},
		{name: "max jobs 1025", extra: "MAX_CONCURRENT_JOBS = 1025", wantErr: `{F}:3: MAX_CONCURRENT_JOBS must be an integer from 1 to 1024 (got "1025")`},
		{name: "cpu 100", extra: "MAX_CPU_LOAD_PERCENT = 100", mod: func(c *config.Server, _ string) { c.MaxCPULoadPercent = 100 }},
		{name: "uid root site", extra: "DICOM_UID_ROOT = 1.2.826.0.1.3680043.10.1234", mod: func(c *config.Server, _ string) { c.DICOMUIDRoot = "1.2.826.0.1.3680043.10.1234" }},
		{name: "uid root leading zero", extra: "DICOM_UID_ROOT = 1.02.3", wantErr: `{F}:3: DICOM_UID_ROOT must be a DICOM UID root (digits in components separated by dots, no leading zeros) of at most 43 characters (got "1.02.3")`},
		{name: "uid root trailing dot", extra: "DICOM_UID_ROOT = 1.2.", wantErr: `{F}:3: DICOM_UID_ROOT must be a DICOM UID root (digits in components separated by dots, no leading zeros) of at most 43 characters (got "1.2.")`},
		{name: "uid root too long", extra: "DICOM_UID_ROOT = 1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19", wantErr: `{F}:3: DICOM_UID_ROOT must be a DICOM UID root (digits in components separated by dots, no leading zeros) of at most 43 characters (got "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19")`},
		{name: "cpu 101", extra: "MAX_CPU_LOAD_PERCENT = 101", wantErr: `{F}:3: MAX_CPU_LOAD_PERCENT must be an integer from 1 to 100 (got "101")`},
		{name: "memory 0", extra: "MIN_AVAILABLE_MEMORY_MB = 0", mod: func(c *config.Server, _ string) { c.MinAvailableMemoryBytes = 0 }},
		{name: "memory negative", extra: "MIN_AVAILABLE_MEMORY_MB = -1", wantErr: `{F}:3: MIN_AVAILABLE_MEMORY_MB must be a whole number of MiB from 0 to 1073741824 (got "-1")`},
		{name: "check interval decimal", extra: "RESOURCE_CHECK_INTERVAL_SECONDS = 2.5", mod: func(c *config.Server, _ string) { c.ResourceCheckInterval = 2500 * time.Millisecond }},
		{name: "check interval 0", extra: "RESOURCE_CHECK_INTERVAL_SECONDS = 0", wantErr: `{F}:3: RESOURCE_CHECK_INTERVAL_SECONDS must be a number of seconds from 1 to 3600 (got "0")`},
		{name: "check interval exponent", extra: "RESOURCE_CHECK_INTERVAL_SECONDS = 1e3", wantErr: `{F}:3: RESOURCE_CHECK_INTERVAL_SECONDS must be a number of seconds from 1 to 3600 (got "1e3")`},
		{name: "check interval with unit", extra: "RESOURCE_CHECK_INTERVAL_SECONDS = 5s", wantErr: `{F}:3: RESOURCE_CHECK_INTERVAL_SECONDS must be a number of seconds from 1 to 3600 (got "5s")`},
		{name: "input bytes plain", extra: "MAX_JOB_INPUT_BYTES = 1024", mod: func(c *config.Server, _ string) { c.MaxJobInputBytes = 1024 }},
		{name: "input bytes GiB", extra: "MAX_JOB_INPUT_BYTES = 2 GiB", mod: func(c *config.Server, _ string) { c.MaxJobInputBytes = 2 << 30 }},
		{name: "input bytes kib", extra: "MAX_JOB_INPUT_BYTES = 10kib", mod: func(c *config.Server, _ string) { c.MaxJobInputBytes = 10 << 10 }},
		{name: "input bytes TiB", extra: "MAX_JOB_INPUT_BYTES = 1TiB", mod: func(c *config.Server, _ string) { c.MaxJobInputBytes = 1 << 40 }},
		{name: "input bytes fraction", extra: "MAX_JOB_INPUT_BYTES = 1.5GiB",
			wantErr: `{F}:3: MAX_JOB_INPUT_BYTES must be a size from 1 to 1024TiB: bytes, or a number with a KiB, MiB, GiB or TiB suffix (got "1.5GiB")`},
		{name: "input bytes decimal unit", extra: "MAX_JOB_INPUT_BYTES = 5GB",
			wantErr: `{F}:3: MAX_JOB_INPUT_BYTES must be a size from 1 to 1024TiB: bytes, or a number with a KiB, MiB, GiB or TiB suffix (got "5GB")`},
		{name: "input bytes 0", extra: "MAX_JOB_INPUT_BYTES = 0",
			wantErr: `{F}:3: MAX_JOB_INPUT_BYTES must be a size from 1 to 1024TiB: bytes, or a number with a KiB, MiB, GiB or TiB suffix (got "0")`},
		{name: "input bytes too big", extra: "MAX_JOB_INPUT_BYTES = 2048TiB",
			wantErr: `{F}:3: MAX_JOB_INPUT_BYTES must be a size from 1 to 1024TiB: bytes, or a number with a KiB, MiB, GiB or TiB suffix (got "2048TiB")`},
		{name: "input bytes overflow", extra: "MAX_JOB_INPUT_BYTES = 999999999999TiB",
			wantErr: `{F}:3: MAX_JOB_INPUT_BYTES must be a size from 1 to 1024TiB: bytes, or a number with a KiB, MiB, GiB or TiB suffix (got "999999999999TiB")`},
		{name: "result limits", extra: lines("MAX_RESULT_FILES = 5", "MAX_RESULT_BYTES = 1MiB", "MAX_FILES_PER_JOB = 7", "MAX_QUEUED_JOBS = 9", "MIN_FREE_DISK_MB = 0", "MAX_JOB_ATTEMPTS = 1"),
			mod: func(c *config.Server, _ string) {
				c.MaxResultFiles, c.MaxResultBytes, c.MaxFilesPerJob, c.MaxQueuedJobs, c.MinFreeDiskBytes, c.MaxJobAttempts = 5, 1<<20, 7, 9, 0, 1
			}},
		{name: "slurm keys", extra: lines("EXECUTOR = slurm", "SLURM_PARTITION = gpu", "SLURM_ACCOUNT = mri.lab", "SLURM_QOS = normal",
			"SLURM_TIME_LIMIT_MINUTES = 90", "SLURM_CPUS_PER_JOB = 4", "SLURM_MEM_PER_JOB_MB = 8000", "SLURM_GRES = gpu:a100:1",
			"SLURM_EXTRA_ARGS = --constraint=ib --exclusive", "SLURM_POLL_INTERVAL_MS = 100", "SLURM_OPTIONS_FROM_JOB = slurm_gres, slurm_mem_mb"),
			mod: func(c *config.Server, _ string) {
				c.Executor = "slurm"
				c.Slurm = config.Slurm{Partition: "gpu", Account: "mri.lab", QOS: "normal", TimeLimitMinutes: 90, CPUsPerJob: 4,
					MemPerJobMB: 8000, GRES: "gpu:a100:1", ExtraArgs: []string{"--constraint=ib", "--exclusive"},
					PollInterval: 100 * time.Millisecond, OptionsFromJob: []string{"slurm_gres", "slurm_mem_mb"}}
			}},
		{name: "executor unknown", extra: "EXECUTOR = k8s", wantErr: `{F}:3: EXECUTOR must be local or slurm (got "k8s")`},
		{name: "slurm partition with space", extra: "SLURM_PARTITION = a b",
			wantErr: `{F}:3: SLURM_PARTITION must be at most 64 letters, digits, '_', '.' or '-' (got "a b")`},
		{name: "slurm time 0", extra: "SLURM_TIME_LIMIT_MINUTES = 0",
			wantErr: `{F}:3: SLURM_TIME_LIMIT_MINUTES must be a whole number from 1 to 525600, or empty (got "0")`},
		{name: "slurm extra arg not allowed", extra: "SLURM_EXTRA_ARGS = --output=/x",
			wantErr: `{F}:3: SLURM_EXTRA_ARGS options must be among constraint, nodelist, exclude, reservation, nice, tmp, gpus, gpus-per-node, cpus-per-gpu, mem-per-cpu, mem-per-gpu, exclusive, hint, licenses, comment, begin (got "--output=/x")`},
		{name: "slurm extra arg shell", extra: "SLURM_EXTRA_ARGS = --comment=$(reboot)",
			wantErr: `{F}:3: SLURM_EXTRA_ARGS option values may hold only letters, digits and _.:,=+/@%- (got "--comment=$(reboot)")`},
		{name: "slurm extra arg short", extra: "SLURM_EXTRA_ARGS = -J x",
			wantErr: `{F}:3: SLURM_EXTRA_ARGS options must be --name or --name=value (at most 256 bytes) (got "-J")`},
		{name: "slurm options from job unknown", extra: "SLURM_OPTIONS_FROM_JOB = slurm_account",
			wantErr: `{F}:3: SLURM_OPTIONS_FROM_JOB may name only slurm_gres, slurm_time_limit_minutes, slurm_partition, slurm_mem_mb (got "slurm_account")`},
		{name: "attempts 0", extra: "MAX_JOB_ATTEMPTS = 0", wantErr: `{F}:3: MAX_JOB_ATTEMPTS must be an integer from 1 to 100 (got "0")`},
		{name: "job timeout", extra: "JOB_TIMEOUT_SECONDS = 3600", mod: func(c *config.Server, _ string) { c.JobTimeout = time.Hour }},
		{name: "job timeout negative", extra: "JOB_TIMEOUT_SECONDS = -5", wantErr: `{F}:3: JOB_TIMEOUT_SECONDS must be a number of seconds from 0 to 31536000 (got "-5")`},
		{name: "retention decimal hours", extra: "RESULT_RETENTION_HOURS = 0.5", mod: func(c *config.Server, _ string) { c.ResultRetention = 30 * time.Minute }},
		{name: "upload resume off", extra: "UPLOAD_RESUME_HOURS = 0", mod: func(c *config.Server, _ string) { c.UploadResume = 0 }},
		{name: "upload resume hours", extra: "UPLOAD_RESUME_HOURS = 2", mod: func(c *config.Server, _ string) { c.UploadResume = 2 * time.Hour }},
		{name: "upload resume negative", extra: "UPLOAD_RESUME_HOURS = -1", wantErr: `{F}:3: UPLOAD_RESUME_HOURS must be a number of hours from 0 to 87600 (got "-1")`},
		{name: "retention 0", extra: "RESULT_RETENTION_HOURS = 0", wantErr: `{F}:3: RESULT_RETENTION_HOURS must be a number of hours from 0.001 to 87600 (got "0")`},
		{name: "relative paths", extra: lines("RECON_SCRIPT_PATH = scripts/run.sh", "RECON_SERVER_STATE_DIR = ./db", "LOG_FILEPATH = logs/../r.log"),
			mod: func(c *config.Server, dir string) {
				c.ScriptPath = filepath.Join(dir, "scripts", "run.sh")
				c.StateDir = filepath.Join(dir, "db")
				c.LogFile = filepath.Join(dir, "r.log")
			}},
		{name: "absolute paths", extra: lines("RECON_SERVER_BASE_PFILE_DIR = /tmp/recon_server_pfiles", "RECON_JOB_OUTPUT_BASE_DIR = /tmp/x/../outputs/"),
			mod: func(c *config.Server, _ string) {
				c.InputBaseDir = "/tmp/recon_server_pfiles"
				c.OutputBaseDir = "/tmp/outputs"
			}},
		{name: "quoted path with hash", extra: `RECON_SCRIPT_PATH = "/opt/recon #2/run.sh" # the script`,
			mod: func(c *config.Server, _ string) { c.ScriptPath = "/opt/recon #2/run.sh" }},
		{name: "script path empty", extra: "RECON_SCRIPT_PATH =", wantErr: `{F}:3: RECON_SCRIPT_PATH must not be empty`},
		{name: "output inside input", extra: "RECON_JOB_OUTPUT_BASE_DIR = recon_data/inputs/out",
			wantErr: `{F}:3: RECON_SERVER_BASE_PFILE_DIR and RECON_JOB_OUTPUT_BASE_DIR must be separate directories, neither inside the other`},
		{name: "state equals output", extra: lines("RECON_JOB_OUTPUT_BASE_DIR = /tmp/same", "RECON_SERVER_STATE_DIR = /tmp/same/"),
			wantErr: `{F}:4: RECON_JOB_OUTPUT_BASE_DIR and RECON_SERVER_STATE_DIR must be separate directories, neither inside the other`},
		{name: "sibling dirs with common prefix", extra: lines("RECON_JOB_OUTPUT_BASE_DIR = /tmp/recon", "RECON_SERVER_STATE_DIR = /tmp/recon2"),
			mod: func(c *config.Server, _ string) { c.OutputBaseDir, c.StateDir = "/tmp/recon", "/tmp/recon2" }},
		{name: "admin host and port", extra: lines("SERVER_ADMIN_HOSTNAME = ::1", "SERVER_ADMIN_PORT = 0"),
			mod: func(c *config.Server, _ string) { c.AdminHostname, c.AdminPort = "::1", 0 }},
		{name: "admin port equals port", extra: lines("SERVER_ADMIN_HOSTNAME = localhost", "SERVER_ADMIN_PORT = 60000"),
			wantErr: `{F}:4: SERVER_PORT and SERVER_ADMIN_PORT are both 60000 on localhost (SERVER_HOSTNAME, SERVER_ADMIN_HOSTNAME)`},
		{name: "both ports 0", extra: lines("SERVER_ADMIN_HOSTNAME = localhost", "SERVER_ADMIN_PORT = 0", "SERVER_PORT = 0"),
			mod: func(c *config.Server, _ string) { c.AdminHostname, c.AdminPort, c.Port = "localhost", 0, 0 }},
		{name: "same port other host", extra: "SERVER_ADMIN_PORT = 60000", mod: func(c *config.Server, _ string) { c.AdminPort = 60000 }},
		{name: "audit log path", extra: "AUDIT_LOG_FILEPATH = /var/log/recon/audit.jsonl",
			mod: func(c *config.Server, _ string) { c.AuditLogFile = "/var/log/recon/audit.jsonl" }},
		{name: "audit log is the log", extra: lines("LOG_FILEPATH = /var/log/recon/x.log", "AUDIT_LOG_FILEPATH = /var/log/recon/x.log"),
			wantErr: `{F}:4: AUDIT_LOG_FILEPATH is LOG_FILEPATH; the audit trail needs a file of its own`},
		{name: "client keys are not checked", extra: lines("CLIENT_WATCH_PATTERN = [", "CLIENT_DAEMON_POLL_INTERVAL = never"), mod: func(*config.Server, string) {}},
		{name: "other key", file: lines("SHARED_KEY = "+testKeyText(3), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			mod: func(c *config.Server, _ string) { c.SharedKey = k3 }},
		{name: "standard base64 key without padding", file: lines("SHARED_KEY = "+strings.TrimRight(strings.NewReplacer("-", "+", "_", "/").Replace(testKeyText(0xfb)), "="), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			mod: func(c *config.Server, _ string) { c.SharedKey = testKey(t, 0xfb) }},
		{name: "quoted key", file: lines(`SHARED_KEY = "`+testKeyText(1)+`"`, "SERVER_ADMIN_SHARED_KEY = '"+testKeyText(2)+"'"),
			mod: func(*config.Server, string) {}},
		{name: "same keys", file: lines("SHARED_KEY = "+testKeyText(1), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(1)),
			wantErr: `{F}:2: SHARED_KEY and SERVER_ADMIN_SHARED_KEY are the same key; each role needs its own: generate another with recon keygen`},
		{name: "same keys, admin first", file: lines("SERVER_ADMIN_SHARED_KEY = "+testKeyText(1), "SHARED_KEY = "+testKeyText(1)),
			wantErr: `{F}:2: SERVER_ADMIN_SHARED_KEY and SHARED_KEY are the same key; each role needs its own: generate another with recon keygen`},
		{name: "missing shared key", file: lines("SERVER_ADMIN_SHARED_KEY = " + testKeyText(2)),
			wantErr: `{F}: SHARED_KEY is required: generate one with recon keygen`},
		{name: "missing both keys", file: "",
			wantErr: "{F}: SERVER_ADMIN_SHARED_KEY is required: generate one with recon keygen\n{F}: SHARED_KEY is required: generate one with recon keygen"},
		{name: "placeholder key", file: lines("SHARED_KEY = SET_YOUR_SHARED_KEY_HERE # For client-server communication", "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			wantErr: `{F}:1: SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here`},
		{name: "empty key", file: lines("SHARED_KEY =", "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			wantErr: `{F}:1: SHARED_KEY is empty: generate a key with recon keygen and put it here`},
		{name: "short key", file: lines("SHARED_KEY = "+testKeyText(1)[:30], "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			wantErr: `{F}:1: SHARED_KEY is not a valid key: want 32 bytes in base64 (44 characters, as printed by recon keygen)`},
		{name: "zero key", file: lines("SHARED_KEY = "+testKeyText(0), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)),
			wantErr: `{F}:1: SHARED_KEY is all zero bytes: generate a real key with recon keygen`},
		{name: "several errors", extra: lines("SERVER_PORT = x", "LOG_LEVEL = y"),
			wantErr: "{F}:3: SERVER_PORT must be a port number from 0 to 65535 (got \"x\")\n{F}:4: LOG_LEVEL must be DEBUG, INFO, WARNING, WARN or ERROR (got \"y\")"},
		{name: "syntax error", extra: "SERVER_PORT", wantErr: "{F}:3: missing '=': want ITEM = VALUE"},
		{name: "duplicate", extra: "shared_key = " + testKeyText(3), wantErr: "{F}:3: duplicate key SHARED_KEY (first set on line 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.file
			if content == "" && tt.mod != nil || tt.extra != "" {
				content = base + tt.extra
			}
			path := writeOpts(t, t.TempDir(), "recon.opts", content)
			got, warns, err := config.LoadServer(path)
			if len(warns) != 0 {
				t.Errorf("LoadServer(%q) warnings: %q", content, warningStrings(warns))
			}
			if tt.wantErr != "" {
				want := expand(tt.wantErr, path)
				if err == nil || err.Error() != want {
					t.Fatalf("LoadServer(%q) error = %v, want %v", content, err, want)
				}
				if got != nil {
					t.Errorf("LoadServer(%q) = %+v with an error, want nil", content, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadServer(%q) error: %v", content, err)
			}
			want := defaultServer(t, path, k1, k2)
			tt.mod(want, filepath.Dir(path))
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("LoadServer(%q) mismatch (-want +got):\n%s", content, diff)
			}
		})
	}
}

func TestLoadServerKeyErrorsWrap(t *testing.T) {
	tests := []struct {
		value string
		want  error
	}{
		{"SET_YOUR_SHARED_KEY_HERE", keys.ErrPlaceholder},
		{"", keys.ErrEmpty},
		{"abc", keys.ErrInvalid},
		{testKeyText(0), keys.ErrAllZero},
	}
	for _, tt := range tests {
		path := writeOpts(t, t.TempDir(), "recon.opts", lines("SHARED_KEY = "+tt.value, "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)))
		_, _, err := config.LoadServer(path)
		if !errors.Is(err, tt.want) {
			t.Errorf("LoadServer with SHARED_KEY = %q: error %v, want one wrapping %v", tt.value, err, tt.want)
		}
		var pe *config.ParseError
		if !errors.As(err, &pe) || pe.Line != 1 || pe.File != path {
			t.Errorf("LoadServer with SHARED_KEY = %q: error %v, want a *ParseError at %s:1", tt.value, err, path)
		}
	}
}

func TestLoadClient(t *testing.T) {
	k1 := testKey(t, 1)
	base := lines("SERVER_HOSTNAME = localhost", "SERVER_PORT = 60000", "SHARED_KEY = "+testKeyText(1)) // lines 1–3
	tests := []struct {
		name    string
		file    string
		extra   string // lines 4…
		mod     func(c *config.Client, dir string)
		wantErr string
	}{
		{name: "three keys are enough", mod: func(*config.Client, string) {}},
		{name: "only the key", file: "SHARED_KEY = " + testKeyText(1), mod: func(*config.Client, string) {}},
		{name: "address", file: lines("SHARED_KEY = "+testKeyText(1), "SERVER_HOSTNAME = 127.0.0.1", "SERVER_PORT = 1"),
			mod: func(c *config.Client, _ string) { c.Hostname, c.Port = "127.0.0.1", 1 }},
		{name: "port 0", file: lines("SHARED_KEY = "+testKeyText(1), "SERVER_PORT = 0"),
			wantErr: `{F}:2: SERVER_PORT is 0 ("pick a free port", for a listener); a client needs the port the listener is on`},
		{name: "missing key", file: "SERVER_PORT = 60000", wantErr: "{F}: SHARED_KEY is required: it is the server's client key: copy SHARED_KEY from the server's recon.opts (through a relay, SHARED_KEY_RELAY_TO_CLIENTS from its relay.opts); a newly generated key cannot work"},
		{name: "server keys are not checked", extra: lines("MAX_CONCURRENT_JOBS = lots", "SERVER_ADMIN_SHARED_KEY = SET_YOUR_SERVER_ADMIN_KEY_HERE", "TRUSTED_IPS = nope", "RECON_SCRIPT_PATH ="),
			mod: func(*config.Client, string) {}},
		{name: "same admin key is the server's problem", extra: "SERVER_ADMIN_SHARED_KEY = " + testKeyText(1), mod: func(*config.Client, string) {}},
		{name: "pfile options", extra: lines("CLIENT_DEFAULT_PFILE_NAME = P12345.7", "CLIENT_DEFAULT_PFILE_PATH = /tmp/default_pfile_on_client/P00000.7", "CLIENT_DOWNLOAD_DIR = out"),
			mod: func(c *config.Client, dir string) {
				c.DefaultPfileName = "P12345.7"
				c.DefaultPfilePath = "/tmp/default_pfile_on_client/P00000.7"
				c.DownloadDir = filepath.Join(dir, "out")
			}},
		{name: "pfile name with directory", extra: "CLIENT_DEFAULT_PFILE_NAME = a/P1.7", wantErr: `{F}:4: CLIENT_DEFAULT_PFILE_NAME must be a plain file name, without a directory (got "a/P1.7")`},
		{name: "download dir empty", extra: "CLIENT_DOWNLOAD_DIR =", wantErr: `{F}:4: CLIENT_DOWNLOAD_DIR must not be empty`},
		{name: "watch options", extra: lines("CLIENT_WATCH_DIRECTORY = incoming", `CLIENT_WATCH_PATTERN = "P*.7"`, "CLIENT_DAEMON_POLL_INTERVAL = 0.05",
			"CLIENT_DAEMON_STABILITY_DELAY = 0", "CLIENT_DAEMON_GROUPING_TIMEOUT = 1.5"),
			mod: func(c *config.Client, dir string) {
				c.WatchDir = filepath.Join(dir, "incoming")
				c.WatchPattern = "P*.7"
				c.PollInterval, c.StabilityDelay, c.GroupingTimeout = 50*time.Millisecond, 0, 1500*time.Millisecond
			}},
		{name: "watch directory empty", extra: "CLIENT_WATCH_DIRECTORY = ", mod: func(*config.Client, string) {}},
		{name: "watch state, attempts, log", extra: lines("CLIENT_DAEMON_STATE_DIR = /var/lib/recon-watch", "CLIENT_DAEMON_MAX_JOB_ATTEMPTS = 3",
			"CLIENT_DAEMON_LOG_FILEPATH = watch.log"),
			mod: func(c *config.Client, dir string) {
				c.WatchStateDir = "/var/lib/recon-watch"
				c.WatchAttempts = 3
				c.WatchLogFile = filepath.Join(dir, "watch.log")
			}},
		{name: "watch state dir empty", extra: "CLIENT_DAEMON_STATE_DIR =", wantErr: `{F}:4: CLIENT_DAEMON_STATE_DIR must not be empty`},
		{name: "watch attempts 0", extra: "CLIENT_DAEMON_MAX_JOB_ATTEMPTS = 0", wantErr: `{F}:4: CLIENT_DAEMON_MAX_JOB_ATTEMPTS must be an integer from 1 to 10 (got "0")`},
		{name: "bad glob", extra: "CLIENT_WATCH_PATTERN = [", wantErr: `{F}:4: CLIENT_WATCH_PATTERN must be a valid file name pattern (filepath.Match) (got "[")`},
		{name: "glob with directory", extra: "CLIENT_WATCH_PATTERN = sub/*.7", wantErr: `{F}:4: CLIENT_WATCH_PATTERN must be a file name pattern, without a directory (got "sub/*.7")`},
		{name: "empty glob", extra: "CLIENT_WATCH_PATTERN =", wantErr: `{F}:4: CLIENT_WATCH_PATTERN must not be empty`},
		{name: "glob list with an empty part", extra: "CLIENT_WATCH_PATTERN = *.cfl,,*.hdr", wantErr: `{F}:4: CLIENT_WATCH_PATTERN must be file name patterns separated by commas, none empty (got "*.cfl,,*.hdr")`},
		{name: "glob list with a bad part", extra: "CLIENT_WATCH_PATTERN = *.cfl,[", wantErr: `{F}:4: CLIENT_WATCH_PATTERN must be a valid file name pattern (filepath.Match) (got "*.cfl,[")`},
		{name: "poll interval 0", extra: "CLIENT_DAEMON_POLL_INTERVAL = 0", wantErr: `{F}:4: CLIENT_DAEMON_POLL_INTERVAL must be a number of seconds from 0.001 to 86400 (got "0")`},
		{name: "stability delay negative", extra: "CLIENT_DAEMON_STABILITY_DELAY = -1", wantErr: `{F}:4: CLIENT_DAEMON_STABILITY_DELAY must be a number of seconds from 0 to 86400 (got "-1")`},
		{name: "grouping timeout trailing dot", extra: "CLIENT_DAEMON_GROUPING_TIMEOUT = 5.", wantErr: `{F}:4: CLIENT_DAEMON_GROUPING_TIMEOUT must be a number of seconds from 0 to 86400 (got "5.")`},
		{name: "options", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"mode": "fast", "slices": 32, "scale": 1.5e2, "coils": true, "name": ""}`,
			mod: func(c *config.Client, _ string) {
				c.ReconOptions = map[string]string{"mode": "fast", "slices": "32", "scale": "1.5e2", "coils": "true", "name": ""}
			}},
		{name: "options quoted with hash", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = '{"tag": "run#2"}' # quoted`,
			mod: func(c *config.Client, _ string) { c.ReconOptions = map[string]string{"tag": "run#2"} }},
		{name: "options empty value", extra: "CLIENT_DAEMON_RECON_OPTIONS_JSON =", mod: func(*config.Client, string) {}},
		{name: "options array", extra: "CLIENT_DAEMON_RECON_OPTIONS_JSON = [1]",
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans`},
		{name: "options null", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": null}`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans: option (got "a") has another kind of value`},
		{name: "options nested", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": {"b": 1}}`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans: option (got "a") has another kind of value`},
		{name: "options duplicate", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": 1, "a": 2}`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans: option (got "a") appears twice`},
		{name: "options trailing", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {} {}`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans: text after the object`},
		{name: "options truncated", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": 1`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans`},
		{name: "options cut by comment", extra: `CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": "x#y"}`,
			wantErr: `{F}:4: CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object whose values are strings, numbers or booleans: unexpected end`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.file
			if content == "" {
				content = base + tt.extra
			}
			path := writeOpts(t, t.TempDir(), "recon.opts", content)
			got, warns, err := config.LoadClient(path)
			if len(warns) != 0 {
				t.Errorf("LoadClient(%q) warnings: %q", content, warningStrings(warns))
			}
			if tt.wantErr != "" {
				want := expand(tt.wantErr, path)
				if err == nil || err.Error() != want {
					t.Fatalf("LoadClient(%q) error = %v, want %v", content, err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadClient(%q) error: %v", content, err)
			}
			want := defaultClient(t, path, k1)
			tt.mod(want, filepath.Dir(path))
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("LoadClient(%q) mismatch (-want +got):\n%s", content, diff)
			}
		})
	}
}

func TestLoadAdmin(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    func(path string) *config.Admin
		wantErr string
	}{
		{name: "only the admin key", file: "SERVER_ADMIN_SHARED_KEY = " + testKeyText(2),
			want: func(p string) *config.Admin { return defaultAdmin(p, testKey(t, 2)) }},
		{name: "address", file: lines("SERVER_ADMIN_SHARED_KEY = "+testKeyText(2), "SERVER_ADMIN_HOSTNAME = ::1", "SERVER_ADMIN_PORT = 7000"),
			want: func(p string) *config.Admin {
				return &config.Admin{Path: p, Hostname: "::1", Port: 7000, SharedKey: testKey(t, 2)}
			}},
		{name: "client key not needed, server keys not checked", file: lines("SERVER_ADMIN_SHARED_KEY = "+testKeyText(2), "SHARED_KEY = SET_YOUR_SHARED_KEY_HERE", "SERVER_PORT = x"),
			want: func(p string) *config.Admin { return defaultAdmin(p, testKey(t, 2)) }},
		{name: "missing key", file: "SHARED_KEY = " + testKeyText(1), wantErr: "{F}: SERVER_ADMIN_SHARED_KEY is required: it is the server's admin key: copy SERVER_ADMIN_SHARED_KEY from the server's recon.opts; a newly generated key cannot work"},
		{name: "placeholder", file: "SERVER_ADMIN_SHARED_KEY = SET_YOUR_SERVER_ADMIN_KEY_HERE # MUST be different",
			wantErr: "{F}:1: SERVER_ADMIN_SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here"},
		{name: "port 0", file: lines("SERVER_ADMIN_SHARED_KEY = "+testKeyText(2), "SERVER_ADMIN_PORT = 0"),
			wantErr: `{F}:2: SERVER_ADMIN_PORT is 0 ("pick a free port", for a listener); a client needs the port the listener is on`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeOpts(t, t.TempDir(), "recon.opts", tt.file)
			got, warns, err := config.LoadAdmin(path)
			if len(warns) != 0 {
				t.Errorf("LoadAdmin(%q) warnings: %q", tt.file, warningStrings(warns))
			}
			if tt.wantErr != "" {
				if want := expand(tt.wantErr, path); err == nil || err.Error() != want {
					t.Fatalf("LoadAdmin(%q) error = %v, want %v", tt.file, err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadAdmin(%q) error: %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want(path), got, cmpOpts); diff != "" {
				t.Errorf("LoadAdmin(%q) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func TestLoadRelay(t *testing.T) {
	k1, k2, k3 := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	base := lines("SHARED_KEY_RELAY_TO_CLIENTS = "+testKeyText(1), "RELAY_ADMIN_SHARED_KEY = "+testKeyText(2)) // lines 1 and 2
	tests := []struct {
		name      string
		file      string
		extra     string // lines 3…
		mod       func(c *config.Relay, dir string)
		wantWarns []string // {F} for the path
		wantErr   string
	}{
		{name: "defaults", mod: func(*config.Relay, string) {}, wantWarns: []string{backendKeyWarning("{F}", 0)}},
		{name: "backend key", extra: "BACKEND_SHARED_KEY = " + testKeyText(3), mod: func(c *config.Relay, _ string) { c.BackendSharedKey = k3 }},
		{name: "backend key empty", extra: "BACKEND_SHARED_KEY =", mod: func(*config.Relay, string) {}, wantWarns: []string{backendKeyWarning("{F}", 3)}},
		{name: "backend key placeholder", extra: "BACKEND_SHARED_KEY = SET_YOUR_BACKEND_KEY_HERE",
			wantErr: "{F}:3: BACKEND_SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here"},
		{name: "backend key equals client key", extra: "BACKEND_SHARED_KEY = " + testKeyText(1),
			wantErr: "{F}:3: SHARED_KEY_RELAY_TO_CLIENTS and BACKEND_SHARED_KEY are the same key; each role needs its own: generate another with recon keygen"},
		{name: "backend key equals admin key", extra: "BACKEND_SHARED_KEY = " + testKeyText(2),
			wantErr: "{F}:3: RELAY_ADMIN_SHARED_KEY and BACKEND_SHARED_KEY are the same key; each role needs its own: generate another with recon keygen"},
		{name: "same keys", file: lines("SHARED_KEY_RELAY_TO_CLIENTS = "+testKeyText(1), "RELAY_ADMIN_SHARED_KEY = "+testKeyText(1), "BACKEND_SHARED_KEY = "+testKeyText(3)),
			wantErr: "{F}:2: SHARED_KEY_RELAY_TO_CLIENTS and RELAY_ADMIN_SHARED_KEY are the same key; each role needs its own: generate another with recon keygen"},
		{name: "missing keys", file: "BACKEND_SHARED_KEY = " + testKeyText(3),
			wantErr: "{F}: RELAY_ADMIN_SHARED_KEY is required: generate one with recon keygen\n{F}: SHARED_KEY_RELAY_TO_CLIENTS is required: generate one with recon keygen"},
		{name: "backends", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "BACKEND_SERVERS = localhost:60000, [::1]:60001,127.0.0.1:7 # three"),
			mod: func(c *config.Relay, _ string) {
				c.BackendSharedKey = k3
				c.BackendServers = []string{"localhost:60000", "[::1]:60001", "127.0.0.1:7"}
			}},
		{name: "backend without port", extra: "BACKEND_SERVERS = localhost",
			wantErr: `{F}:3: BACKEND_SERVERS must be a comma-separated list of host:port; entry 1 is not host:port (got "localhost")`},
		{name: "backend port 0", extra: "BACKEND_SERVERS = localhost:1, localhost:0",
			wantErr: `{F}:3: BACKEND_SERVERS must be a comma-separated list of host:port; entry 2 has a bad port (1 to 65535) (got "localhost:0")`},
		{name: "backend bad host", extra: "BACKEND_SERVERS = -x:1",
			wantErr: `{F}:3: BACKEND_SERVERS must be a comma-separated list of host:port; entry 1 has a bad host (got "-x:1")`},
		{name: "backend empty entry", extra: "BACKEND_SERVERS = localhost:1,,localhost:2",
			wantErr: `{F}:3: BACKEND_SERVERS must be a comma-separated list of host:port; entry 2 is empty`},
		{name: "backend duplicate", extra: "BACKEND_SERVERS = localhost:1, localhost:01",
			wantErr: `{F}:3: BACKEND_SERVERS lists localhost:1 twice`},
		{name: "backends empty", extra: "BACKEND_SERVERS =", wantErr: `{F}:3: BACKEND_SERVERS must not be empty`},
		{name: "backends too many", extra: "BACKEND_SERVERS = " + strings.Repeat("localhost:1,", 64) + "localhost:2",
			wantErr: `{F}:3: BACKEND_SERVERS must list at most 64 host:port entries (got 65)`},
		{name: "trusted client IPs", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "TRUSTED_CLIENT_IPS = 127.0.0.1,192.168.1.0/24"),
			mod: func(c *config.Relay, _ string) {
				c.BackendSharedKey = k3
				c.TrustedClientIPs = mustAllowlist(t, "127.0.0.1,192.168.1.0/24")
			}},
		{name: "listeners", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "RELAY_HOSTNAME = 127.0.0.1", "RELAY_PORT = 0", "RELAY_ADMIN_PORT = 0", "LOG_FILEPATH = /var/log/relay.log", "LOG_LEVEL = debug"),
			mod: func(c *config.Relay, _ string) {
				c.BackendSharedKey = k3
				c.Hostname, c.Port, c.AdminPort = "127.0.0.1", 0, 0
				c.LogFile, c.LogLevel = "/var/log/relay.log", slog.LevelDebug
			}},
		{name: "health interval and state dir", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "BACKEND_HEALTH_INTERVAL_SECONDS = 0.25", "RELAY_STATE_DIR = /var/lib/recon-relay"),
			mod: func(c *config.Relay, _ string) {
				c.BackendSharedKey = k3
				c.HealthInterval = 250 * time.Millisecond
				c.StateDir = "/var/lib/recon-relay"
			}},
		{name: "relative state dir", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "RELAY_STATE_DIR = state"),
			mod: func(c *config.Relay, dir string) {
				c.BackendSharedKey = k3
				c.StateDir = filepath.Join(dir, "state")
			}},
		{name: "health interval too short", extra: "BACKEND_HEALTH_INTERVAL_SECONDS = 0.01",
			wantErr: "{F}:3: BACKEND_HEALTH_INTERVAL_SECONDS must be a number of seconds from 0.1 to 3600 (got \"0.01\")"},
		{name: "state dir empty", extra: "RELAY_STATE_DIR =", wantErr: "{F}:3: RELAY_STATE_DIR must not be empty"},
		{name: "same listener", extra: lines("BACKEND_SHARED_KEY = "+testKeyText(3), "RELAY_HOSTNAME = 127.0.0.1", "RELAY_PORT = 60002"),
			wantErr: `{F}:5: RELAY_PORT and RELAY_ADMIN_PORT are both 60002 on 127.0.0.1 (RELAY_HOSTNAME, RELAY_ADMIN_HOSTNAME)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.file
			if content == "" {
				content = base + tt.extra
			}
			path := writeOpts(t, t.TempDir(), "relay.opts", content)
			got, warns, err := config.LoadRelay(path)
			var wantWarns []string
			for _, w := range tt.wantWarns {
				wantWarns = append(wantWarns, expand(w, path))
			}
			if tt.wantErr != "" {
				if want := expand(tt.wantErr, path); err == nil || err.Error() != want {
					t.Fatalf("LoadRelay(%q) error = %v, want %v", content, err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadRelay(%q) error: %v", content, err)
			}
			if diff := cmp.Diff(wantWarns, warningStrings(warns)); diff != "" {
				t.Errorf("LoadRelay(%q) warnings (-want +got):\n%s", content, diff)
			}
			want := defaultRelay(t, path, k1, k2)
			tt.mod(want, filepath.Dir(path))
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("LoadRelay(%q) mismatch (-want +got):\n%s", content, diff)
			}
		})
	}
}

func TestLoadRelayAdmin(t *testing.T) {
	path := writeOpts(t, t.TempDir(), "relay.opts", lines("RELAY_ADMIN_SHARED_KEY = "+testKeyText(2), "SHARED_KEY_RELAY_TO_CLIENTS = SET_YOUR_RELAY_TO_CLIENTS_KEY_HERE"))
	got, warns, err := config.LoadRelayAdmin(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadRelayAdmin = %v, %q, want no error or warnings", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultRelayAdmin(path, testKey(t, 2)), got); diff != "" {
		t.Errorf("LoadRelayAdmin mismatch (-want +got):\n%s", diff)
	}

	path = writeOpts(t, t.TempDir(), "relay.opts", lines("RELAY_ADMIN_SHARED_KEY = "+testKeyText(2), "RELAY_ADMIN_PORT = 0"))
	want := path + `:2: RELAY_ADMIN_PORT is 0 ("pick a free port", for a listener); a client needs the port the listener is on`
	if _, _, err := config.LoadRelayAdmin(path); err == nil || err.Error() != want {
		t.Errorf("LoadRelayAdmin with port 0: error = %v, want %v", err, want)
	}
}

func TestWarnings(t *testing.T) {
	keyLines := lines("SHARED_KEY = "+testKeyText(1), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2))
	tests := []struct {
		name  string
		extra string // lines 3…
		want  []string
	}{
		{"typo", "SERVER_PROT = 60000", []string{"{F}:3: unknown key SERVER_PROT (did you mean SERVER_PORT?)"}},
		{"typo lower case", "log_levle = INFO", []string{"{F}:3: unknown key LOG_LEVLE (did you mean LOG_LEVEL?)"}},
		{"missing letter", "MAX_CONCURENT_JOBS = 2", []string{"{F}:3: unknown key MAX_CONCURENT_JOBS (did you mean MAX_CONCURRENT_JOBS?)"}},
		{"nothing near", "FOO = 1", []string{"{F}:3: unknown key FOO"}},
		{"relay key", "RELAY_PORT = 60001", []string{"{F}:3: unknown key RELAY_PORT (it belongs in relay.opts)"}},
		{"legacy keys", lines("SCANNER_USERNAME = sdc", "SCANNER_PASSWORD = adw2.0", "SSH_PORT = 22", "SOURCE_DATA_PATH = /usr/g/mrraw/",
			"SCANNER_DICOM_SOURCE_DIR = /tmp/scanner_dicoms/", "RECON_SERVER_DICOM_OUTPUT_DIR = /tmp/recon_server_dicoms"), []string{
			"{F}:3: SCANNER_USERNAME is a key of the Python prototype that recon does not use; it is ignored",
			"{F}:4: SCANNER_PASSWORD is a key of the Python prototype that recon does not use; it is ignored",
			"{F}:5: SSH_PORT is a key of the Python prototype that recon does not use; it is ignored",
			"{F}:6: SOURCE_DATA_PATH is a key of the Python prototype that recon does not use; it is ignored",
			"{F}:7: SCANNER_DICOM_SOURCE_DIR is a key of the Python prototype that recon does not use; it is ignored",
			"{F}:8: RECON_SERVER_DICOM_OUTPUT_DIR is a key of the Python prototype that recon does not use; it is ignored",
		}},
		{"in file order", lines("ZZZ = 1", "SERVER_HOST = x"), []string{"{F}:3: unknown key ZZZ", "{F}:4: unknown key SERVER_HOST (did you mean SERVER_PORT?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := keyLines + tt.extra
			path := writeOpts(t, t.TempDir(), "recon.opts", content)
			var want []string
			for _, w := range tt.want {
				want = append(want, expand(w, path))
			}
			loaders := map[string]func(string) ([]config.Warning, error){
				"LoadServer": func(p string) ([]config.Warning, error) { _, w, err := config.LoadServer(p); return w, err },
				"LoadClient": func(p string) ([]config.Warning, error) { _, w, err := config.LoadClient(p); return w, err },
				"LoadAdmin":  func(p string) ([]config.Warning, error) { _, w, err := config.LoadAdmin(p); return w, err },
			}
			for name, load := range loaders {
				warns, err := load(path)
				if err != nil {
					t.Fatalf("%s(%q) error: %v", name, content, err)
				}
				if diff := cmp.Diff(want, warningStrings(warns)); diff != "" {
					t.Errorf("%s(%q) warnings (-want +got):\n%s", name, content, diff)
				}
			}
		})
	}
}

func TestWarningsWithError(t *testing.T) {
	// A misspelt required key: the error says it is missing, the warning
	// says where it is.
	path := writeOpts(t, t.TempDir(), "recon.opts", lines("SHARED_KY = "+testKeyText(1), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)))
	_, warns, err := config.LoadServer(path)
	if want := path + ": SHARED_KEY is required: generate one with recon keygen"; err == nil || err.Error() != want {
		t.Errorf("LoadServer error = %v, want %v", err, want)
	}
	want := []string{path + ":1: unknown key SHARED_KY (did you mean SHARED_KEY?)"}
	if diff := cmp.Diff(want, warningStrings(warns)); diff != "" {
		t.Errorf("LoadServer warnings (-want +got):\n%s", diff)
	}
}

func TestRelayFileWarnings(t *testing.T) {
	path := writeOpts(t, t.TempDir(), "relay.opts", lines(
		"SHARED_KEY_RELAY_TO_CLIENTS = "+testKeyText(1), "RELAY_ADMIN_SHARED_KEY = "+testKeyText(2), "BACKEND_SHARED_KEY = "+testKeyText(3),
		"SERVER_PORT = 60000", "RELAY_PROT = 1", "SSH_PORT = 22"))
	_, warns, err := config.LoadRelay(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + ":4: unknown key SERVER_PORT (it belongs in recon.opts)",
		path + ":5: unknown key RELAY_PROT (did you mean RELAY_PORT?)",
		path + ":6: unknown key SSH_PORT",
	}
	if diff := cmp.Diff(want, warningStrings(warns)); diff != "" {
		t.Errorf("LoadRelay warnings (-want +got):\n%s", diff)
	}
}

func TestFileModeWarning(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix file modes")
	}
	path := writeOpts(t, t.TempDir(), "recon.opts", lines("SHARED_KEY = "+testKeyText(1), "FOO = 1"))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, warns, err := config.LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + ": file mode is 0644: other users can read or change it, and it holds secret keys (chmod 600 it)",
		path + ":2: unknown key FOO",
	}
	if diff := cmp.Diff(want, warningStrings(warns)); diff != "" {
		t.Errorf("LoadClient warnings (-want +got):\n%s", diff)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "recon.opts")
	big := writeOpts(t, dir, "big.opts", strings.Repeat("#", config.MaxFileSize+1))

	loaders := map[string]func(string) error{
		"LoadServer":     func(p string) error { _, _, err := config.LoadServer(p); return err },
		"LoadClient":     func(p string) error { _, _, err := config.LoadClient(p); return err },
		"LoadAdmin":      func(p string) error { _, _, err := config.LoadAdmin(p); return err },
		"LoadRelay":      func(p string) error { _, _, err := config.LoadRelay(p); return err },
		"LoadRelayAdmin": func(p string) error { _, _, err := config.LoadRelayAdmin(p); return err },
	}
	for name, load := range loaders {
		if err := load(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s(missing) error = %v, want one wrapping fs.ErrNotExist", name, err)
		}
		if err := load(dir); err == nil || err.Error() != dir+": not a regular file" {
			t.Errorf("%s(directory) error = %v, want %q", name, err, dir+": not a regular file")
		}
		if err := load(big); err == nil || err.Error() != big+": file is larger than 1048576 bytes" {
			t.Errorf("%s(big file) error = %v", name, err)
		}
	}
}

// TestRelativeConfigPath checks that paths are resolved against the file's
// directory, not the working directory, when the file is named relatively.
func TestRelativeConfigPath(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "etc")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	writeOpts(t, sub, "recon.opts", lines("SHARED_KEY = "+testKeyText(1), "CLIENT_DOWNLOAD_DIR = dl"))
	t.Chdir(dir)
	c, _, err := config.LoadClient(filepath.Join("etc", "recon.opts"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(sub, "dl"); c.DownloadDir != want {
		t.Errorf("DownloadDir = %q, want %q", c.DownloadDir, want)
	}
	if want := filepath.Join("etc", "recon.opts"); c.Path != want {
		t.Errorf("Path = %q, want %q", c.Path, want)
	}
}

func TestAddr(t *testing.T) {
	tests := []struct{ got, want string }{
		{(&config.Server{Hostname: "localhost", Port: 60000}).Addr(), "localhost:60000"},
		{(&config.Server{AdminHostname: "::1", AdminPort: 60003}).AdminAddr(), "[::1]:60003"},
		{(&config.Client{Hostname: "127.0.0.1", Port: 1}).Addr(), "127.0.0.1:1"},
		{(&config.Admin{Hostname: "127.0.0.1", Port: 60003}).Addr(), "127.0.0.1:60003"},
		{(&config.Relay{Hostname: "localhost", Port: 60001}).Addr(), "localhost:60001"},
		{(&config.Relay{AdminHostname: "127.0.0.1", AdminPort: 60002}).AdminAddr(), "127.0.0.1:60002"},
		{(&config.RelayAdmin{Hostname: "::1", Port: 60002}).Addr(), "[::1]:60002"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("Addr() = %q, want %q", tt.got, tt.want)
		}
	}
}
