package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Limits of the Slurm command-line tools as the Slurm executor runs them.
const (
	// slurmCommandTimeout bounds one run of sbatch, squeue, scontrol or
	// scancel: a controller that does not answer is retried later.
	slurmCommandTimeout = 30 * time.Second
	// maxSlurmOutput caps what is read of one command's output; a line
	// of squeue is about 60 bytes per job.
	maxSlurmOutput = 8 << 20
	// maxSlurmIDsPerQuery is the most job ids one squeue asks about.
	maxSlurmIDsPerQuery = 500
)

// errSlurmUnknownJob: the controller does not know the job (never
// submitted, or forgotten after MinJobAge).
var errSlurmUnknownJob = errors.New("slurm does not know the job")

// slurmCLI runs Slurm's command-line tools (sbatch, squeue, scontrol,
// scancel) with argument lists, never through a shell, in the server's
// environment (PATH and SLURM_CONF find the cluster).
type slurmCLI struct {
	// prefix is prepended to each command's name ("" uses PATH); tests
	// point it at fake tools.
	prefix string
}

// slurmJob is what the controller says of one job.
type slurmJob struct {
	ID     string
	Name   string
	State  string // PENDING, RUNNING, COMPLETED, ...
	Reason string // why it is pending, or how it ended ("None" when nothing to say)
	Exit   string // ExitCode=status:signal, from scontrol only
}

// slurmTerminal reports whether a Slurm job state is final: nothing of the
// job runs any more. COMPLETING is not final (processes are still being
// ended), nor are SUSPENDED, REQUEUED and the like.
func slurmTerminal(state string) bool {
	switch state {
	case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
		"PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT":
		return true
	}
	return false
}

func (c *slurmCLI) run(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, slurmCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.prefix+name, args...)
	cmd.Env = sbatchEnv()
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut cappedBuffer
	out.max, errOut.max = maxSlurmOutput, 4<<10
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(errOut.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		if strings.Contains(msg, "Invalid job id specified") {
			return out.Bytes(), errSlurmUnknownJob
		}
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, firstLine(msg))
	}
	if out.over {
		return nil, fmt.Errorf("%s: more than %d bytes of output", name, maxSlurmOutput)
	}
	return out.Bytes(), nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// submit runs sbatch --parsable with args and the batch script on its
// standard input, and returns the new job's id.
func (c *slurmCLI) submit(ctx context.Context, args []string, script string) (string, error) {
	out, err := c.run(ctx, script, "sbatch", append([]string{"--parsable"}, args...)...)
	if err != nil {
		return "", err
	}
	return parseSbatchID(string(out))
}

// parseSbatchID reads sbatch --parsable's answer: the job id, then
// ";cluster" on a federation.
func parseSbatchID(out string) (string, error) {
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	if !validSlurmID(id) {
		return "", fmt.Errorf("sbatch: unexpected answer %q", firstLine(out))
	}
	return id, nil
}

func validSlurmID(id string) bool {
	if id == "" || len(id) > 20 {
		return false
	}
	for _, r := range id {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

const squeueFormat = "%i|%T|%r|%j"

// query asks the controller for the jobs with ids, in one squeue; jobs it
// does not know are missing from the answer.
func (c *slurmCLI) query(ctx context.Context, ids []string) (map[string]slurmJob, error) {
	res := make(map[string]slurmJob, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), maxSlurmIDsPerQuery)
		out, err := c.run(ctx, "", "squeue", "-h", "-t", "all", "-o", squeueFormat, "-j", strings.Join(ids[:n], ","))
		if err != nil && !errors.Is(err, errSlurmUnknownJob) {
			return nil, err
		}
		for _, j := range parseSqueue(string(out)) {
			res[j.ID] = j
		}
		ids = ids[n:]
	}
	return res, nil
}

// findByName lists the jobs the controller knows by the given names.
func (c *slurmCLI) findByName(ctx context.Context, names []string) ([]slurmJob, error) {
	out, err := c.run(ctx, "", "squeue", "-h", "-t", "all", "-o", squeueFormat, "-n", strings.Join(names, ","))
	if err != nil {
		return nil, err
	}
	return parseSqueue(string(out)), nil
}

// parseSqueue reads lines of squeueFormat. Lines that do not fit are
// skipped (a job name holds no '|': recon names its jobs).
func parseSqueue(out string) []slurmJob {
	var js []slurmJob
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(strings.TrimSpace(line), "|", 4)
		if len(f) != 4 || !validSlurmID(f[0]) || f[1] == "" {
			continue
		}
		js = append(js, slurmJob{ID: f[0], State: f[1], Reason: f[2], Name: f[3]})
	}
	return js
}

// show reads one job with scontrol show job -o: its state, reason and
// exit code. errSlurmUnknownJob when the controller does not know it.
func (c *slurmCLI) show(ctx context.Context, id string) (slurmJob, error) {
	out, err := c.run(ctx, "", "scontrol", "show", "job", "-o", id)
	if err != nil {
		return slurmJob{}, err
	}
	j := parseScontrol(string(out))
	if j.ID != id {
		return slurmJob{}, fmt.Errorf("scontrol: no record of job %s in its answer", id)
	}
	return j, nil
}

// parseScontrol reads the Key=Value line of scontrol show job -o.
func parseScontrol(out string) slurmJob {
	var j slurmJob
	for _, kv := range strings.Fields(firstLineOnly(out)) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "JobId":
			j.ID = v
		case "JobName":
			j.Name = v
		case "JobState":
			j.State = v
		case "Reason":
			j.Reason = v
		case "ExitCode":
			j.Exit = v
		}
	}
	return j
}

func firstLineOnly(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// signal sends sig to every process of the job, the batch script's too,
// without ending the job.
func (c *slurmCLI) signal(ctx context.Context, id, sig string) error {
	_, err := c.run(ctx, "", "scancel", "--full", "--signal="+sig, id)
	if errors.Is(err, errSlurmUnknownJob) {
		return nil
	}
	return err
}

// cancel ends the job: Slurm sends SIGTERM, then SIGKILL after its
// KillWait.
func (c *slurmCLI) cancel(ctx context.Context, id string) error {
	_, err := c.run(ctx, "", "scancel", id)
	if errors.Is(err, errSlurmUnknownJob) {
		return nil
	}
	return err
}
