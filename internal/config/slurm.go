package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Executors, the values of EXECUTOR.
const (
	ExecutorLocal = "local"
	ExecutorSlurm = "slurm"
)

// Bounds of the SLURM_* keys and of the job options that override them.
const (
	MaxSlurmTimeLimitMinutes = 365 * 24 * 60
	MaxSlurmCPUsPerJob       = 4096
	MaxSlurmMemMB            = 1 << 24 // 16 TiB
	maxSlurmName             = 64      // partition, account, QOS
	maxSlurmGRES             = 128
	maxSlurmExtraArgs        = 32
	maxSlurmExtraArg         = 256
)

// The job options SLURM_OPTIONS_FROM_JOB may let a client set.
const (
	JobOptSlurmGRES      = "slurm_gres"
	JobOptSlurmTimeLimit = "slurm_time_limit_minutes"
	JobOptSlurmPartition = "slurm_partition"
	JobOptSlurmMemMB     = "slurm_mem_mb"
)

// SlurmJobOptions lists the job options SLURM_OPTIONS_FROM_JOB may name.
func SlurmJobOptions() []string {
	return []string{JobOptSlurmGRES, JobOptSlurmTimeLimit, JobOptSlurmPartition, JobOptSlurmMemMB}
}

// slurmExtraOptions are the sbatch options SLURM_EXTRA_ARGS may hold: none
// of them changes what recon relies on (the job's name, output files,
// working directory, environment, requeueing, or how sbatch answers).
var slurmExtraOptions = []string{
	"constraint", "nodelist", "exclude", "reservation", "nice", "tmp", "gpus", "gpus-per-node",
	"cpus-per-gpu", "mem-per-cpu", "mem-per-gpu", "exclusive", "hint", "licenses", "comment", "begin",
}

// Slurm is the configuration of the Slurm executor. Empty strings and zero
// numbers mean Slurm's default.
type Slurm struct {
	Partition        string        // SLURM_PARTITION
	Account          string        // SLURM_ACCOUNT
	QOS              string        // SLURM_QOS
	TimeLimitMinutes int           // SLURM_TIME_LIMIT_MINUTES; 0: derived from JOB_TIMEOUT_SECONDS
	CPUsPerJob       int           // SLURM_CPUS_PER_JOB
	MemPerJobMB      int           // SLURM_MEM_PER_JOB_MB
	GRES             string        // SLURM_GRES
	ExtraArgs        []string      // SLURM_EXTRA_ARGS, each one sbatch argument
	PollInterval     time.Duration // SLURM_POLL_INTERVAL_MS
	OptionsFromJob   []string      // SLURM_OPTIONS_FROM_JOB: job options that may override the above
}

var (
	slurmNameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	slurmGRESRE  = regexp.MustCompile(`^[A-Za-z0-9_.:,-]+$`)
	slurmValueRE = regexp.MustCompile(`^[A-Za-z0-9_.:,=+/@%-]+$`)
)

// CheckSlurmJobOption validates the value of one of the SlurmJobOptions and
// returns it as sbatch takes it. The rules are those of the matching key.
func CheckSlurmJobOption(name, v string) (string, error) {
	switch name {
	case JobOptSlurmGRES:
		return v, checkSlurmGRES(v)
	case JobOptSlurmPartition:
		return v, checkSlurmName(v)
	case JobOptSlurmTimeLimit:
		n, err := slurmNumber(v, MaxSlurmTimeLimitMinutes)
		return strconv.Itoa(n), err
	case JobOptSlurmMemMB:
		n, err := slurmNumber(v, MaxSlurmMemMB)
		return strconv.Itoa(n), err
	}
	return "", fmt.Errorf("%s is not a Slurm job option", name)
}

func checkSlurmName(v string) error {
	if len(v) > maxSlurmName || !slurmNameRE.MatchString(v) {
		return fmt.Errorf("must be at most %d letters, digits, '_', '.' or '-'", maxSlurmName)
	}
	return nil
}

func checkSlurmGRES(v string) error {
	if len(v) > maxSlurmGRES || !slurmGRESRE.MatchString(v) {
		return fmt.Errorf("must be a GRES list such as gpu:1 (at most %d letters, digits, '_', '.', ':', ',' or '-')", maxSlurmGRES)
	}
	return nil
}

func slurmNumber(v string, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > hi {
		return 0, fmt.Errorf("must be a whole number from 1 to %d", hi)
	}
	return n, nil
}

// checkSlurmExtraArgs splits SLURM_EXTRA_ARGS into sbatch arguments.
func checkSlurmExtraArgs(v string) ([]string, error) {
	args := strings.Fields(v)
	if len(args) == 0 {
		return nil, nil
	}
	if len(args) > maxSlurmExtraArgs {
		return nil, fmt.Errorf("holds %d options, at most %d", len(args), maxSlurmExtraArgs)
	}
	for _, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case !strings.HasPrefix(a, "--") || len(a) > maxSlurmExtraArg:
			return nil, fmt.Errorf("options must be --name or --name=value (at most %d bytes)%s", maxSlurmExtraArg, got(a))
		case !slices.Contains(slurmExtraOptions, name):
			return nil, fmt.Errorf("options must be among %s%s", strings.Join(slurmExtraOptions, ", "), got(a))
		case hasVal && !slurmValueRE.MatchString(val):
			return nil, fmt.Errorf("option values may hold only letters, digits and _.:,=+/@%%-%s", got(a))
		}
	}
	return args, nil
}

// buildSlurm reads EXECUTOR and the SLURM_* keys.
func buildSlurm(s *source) (string, Slurm) {
	exec := strings.TrimSpace(get[string](s, "EXECUTOR"))
	if exec != ExecutorLocal && exec != ExecutorSlurm {
		s.fail(s.line("EXECUTOR"), "EXECUTOR must be local or slurm%s", got(exec))
	}
	c := Slurm{PollInterval: time.Duration(get[int](s, "SLURM_POLL_INTERVAL_MS")) * time.Millisecond}
	str := func(name string, check func(string) error) string {
		v := strings.TrimSpace(get[string](s, name))
		if v == "" {
			return ""
		}
		if err := check(v); err != nil {
			s.fail(s.line(name), "%s %s%s", name, err, got(v))
		}
		return v
	}
	num := func(name string, hi int) int {
		v := strings.TrimSpace(get[string](s, name))
		if v == "" {
			return 0
		}
		n, err := slurmNumber(v, hi)
		if err != nil {
			s.fail(s.line(name), "%s %s, or empty%s", name, err, got(v))
		}
		return n
	}
	c.Partition = str("SLURM_PARTITION", checkSlurmName)
	c.Account = str("SLURM_ACCOUNT", checkSlurmName)
	c.QOS = str("SLURM_QOS", checkSlurmName)
	c.GRES = str("SLURM_GRES", checkSlurmGRES)
	c.TimeLimitMinutes = num("SLURM_TIME_LIMIT_MINUTES", MaxSlurmTimeLimitMinutes)
	c.CPUsPerJob = num("SLURM_CPUS_PER_JOB", MaxSlurmCPUsPerJob)
	c.MemPerJobMB = num("SLURM_MEM_PER_JOB_MB", MaxSlurmMemMB)
	args, err := checkSlurmExtraArgs(get[string](s, "SLURM_EXTRA_ARGS"))
	if err != nil {
		s.fail(s.line("SLURM_EXTRA_ARGS"), "SLURM_EXTRA_ARGS %s", err)
	}
	c.ExtraArgs = args
	for _, o := range strings.Split(get[string](s, "SLURM_OPTIONS_FROM_JOB"), ",") {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case !slices.Contains(SlurmJobOptions(), o):
			s.fail(s.line("SLURM_OPTIONS_FROM_JOB"), "SLURM_OPTIONS_FROM_JOB may name only %s%s", strings.Join(SlurmJobOptions(), ", "), got(o))
		case !slices.Contains(c.OptionsFromJob, o):
			c.OptionsFromJob = append(c.OptionsFromJob, o)
		}
	}
	return exec, c
}
