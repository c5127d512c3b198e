package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/recon-mri/recon/internal/runner"
)

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// slurmPoller asks the controller about many jobs in one squeue: callers
// that ask while a query runs are gathered into the next one, so however
// many attempts run, at most one squeue is in flight and one waits.
type slurmPoller struct {
	cli *slurmCLI

	mu       sync.Mutex
	next     *pollRound // gathering callers; its first caller runs it
	inflight *pollRound // being asked
}

type pollRound struct {
	ids  map[string]bool
	done chan struct{}
	res  map[string]slurmJob
	err  error
}

func newSlurmPoller(cli *slurmCLI) *slurmPoller { return &slurmPoller{cli: cli} }

// get returns what the controller says of job id; known is false when it
// does not know the job.
func (p *slurmPoller) get(ctx context.Context, id string) (j slurmJob, known bool, err error) {
	p.mu.Lock()
	r, leader := p.next, false
	if r == nil {
		r = &pollRound{ids: map[string]bool{}, done: make(chan struct{})}
		p.next, leader = r, true
	}
	r.ids[id] = true
	prev := p.inflight
	p.mu.Unlock()
	if leader {
		if prev != nil {
			<-prev.done // bounded by slurmCommandTimeout
		}
		p.mu.Lock()
		p.next, p.inflight = nil, r
		ids := make([]string, 0, len(r.ids))
		for id := range r.ids {
			ids = append(ids, id)
		}
		p.mu.Unlock()
		r.res, r.err = p.cli.query(context.WithoutCancel(ctx), ids)
		p.mu.Lock()
		if p.inflight == r {
			p.inflight = nil
		}
		p.mu.Unlock()
		close(r.done)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return slurmJob{}, false, ctx.Err()
	}
	if r.err != nil {
		return slurmJob{}, false, r.err
	}
	j, known = r.res[id]
	return j, known, nil
}

// wait is how long to sleep until the next multiple of interval: every
// attempt polls at the same moments, so their questions share a query.
func (p *slurmPoller) wait(interval time.Duration) time.Duration {
	return interval - time.Duration(time.Now().UnixNano()%int64(interval))
}

// slurmOutput relays what the script wrote to its stdout and stderr files
// (the batch job's --output and --error) to the server's log, one record
// per line, as the runner does for a local script; it keeps the end of
// stderr for the job's error.
type slurmOutput struct {
	log     *slog.Logger
	streams [2]*outputFile
}

type outputFile struct {
	stream  string
	path    string
	off     int64
	partial []byte
	logged  int64
	capped  bool
	tail    []byte // the last runner.StderrTailBytes
}

func newSlurmOutput(log *slog.Logger, ctl string) *slurmOutput {
	return &slurmOutput{log: log, streams: [2]*outputFile{
		{stream: "stdout", path: filepath.Join(ctl, "stdout")},
		{stream: "stderr", path: filepath.Join(ctl, "stderr")},
	}}
}

// relayChunk bounds what one relay reads of one stream.
const relayChunk = 1 << 20

// relay logs the lines written since the last call.
func (o *slurmOutput) relay() {
	for _, s := range o.streams {
		f, err := os.Open(s.path)
		if err != nil {
			continue
		}
		buf := make([]byte, relayChunk)
		n, _ := f.ReadAt(buf, s.off)
		f.Close()
		if n == 0 {
			continue
		}
		s.off += int64(n)
		data := append(s.partial, buf[:n]...)
		s.partial = nil
		if s.stream == "stderr" {
			s.tail = append(s.tail, buf[:n]...)
			if len(s.tail) > runner.StderrTailBytes {
				s.tail = s.tail[len(s.tail)-runner.StderrTailBytes:]
			}
		}
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			o.line(s, data[:i])
			data = data[i+1:]
		}
		if len(data) > runner.MaxLineBytes {
			o.line(s, data)
			data = nil
		}
		s.partial = append([]byte(nil), data...)
	}
}

func (o *slurmOutput) line(s *outputFile, line []byte) {
	if s.capped {
		return
	}
	if s.logged+int64(len(line)) > runner.DefaultMaxLogBytes {
		s.capped = true
		o.log.Warn("script output limit reached; further output is discarded", "stream", s.stream, "limit_bytes", runner.DefaultMaxLogBytes)
		return
	}
	s.logged += int64(len(line))
	attrs := []any{"stream", s.stream}
	if len(line) > runner.MaxLineBytes {
		line = line[:runner.MaxLineBytes]
		attrs = append(attrs, "truncated", true)
	}
	o.log.Info("script output", append(attrs, "line", strings.ToValidUTF8(string(line), "\uFFFD"))...)
}

// size is the size of the stdout and stderr files together.
func (o *slurmOutput) size() int64 {
	var n int64
	for _, s := range o.streams {
		if fi, err := os.Stat(s.path); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// stderrTail logs what is left of unfinished lines and returns the end of
// stderr, for the job's error.
func (o *slurmOutput) stderrTail() string {
	o.relay()
	for _, s := range o.streams {
		if len(s.partial) > 0 {
			o.line(s, s.partial)
			s.partial = nil
		}
	}
	t := o.streams[1].tail
	if len(t) == runner.StderrTailBytes { // cut: start at a whole line
		if i := bytes.IndexByte(t, '\n'); i >= 0 {
			t = t[i+1:]
		}
	}
	return strings.ToValidUTF8(string(t), "\uFFFD")
}

// slurmProbe is the state of the probe job, which checks that the compute
// nodes see the server's directories.
type slurmProbe struct {
	ready chan struct{} // closed when a probe succeeds

	mu   sync.Mutex
	ok   bool
	text string
}

type probeState struct {
	ok   bool
	text string
}

func (p *slurmProbe) get() probeState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.text == "" {
		return probeState{text: "not started"}
	}
	return probeState{ok: p.ok, text: p.text}
}

func (p *slurmProbe) set(ok bool, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok && !p.ok {
		close(p.ready)
	}
	p.ok, p.text = ok, text
}

// probeRetry is how long after a failed probe job the next one starts.
const probeRetry = 30 * time.Second

// probePrefix names the probe's files in the input and output base
// directories.
const probePrefix = ".slurm-probe-"

// Exit statuses of the probe job's script.
const (
	probeNoInput  = 3
	probeNoOutput = 4
	probeNoScript = 5
)

// loop runs the probe job until one succeeds (a goroutine of the server's
// lifecycle, started by Start). Jobs are held until then (held).
func (e *slurmExecutor) loop(ctx context.Context) {
	for ctx.Err() == nil {
		err := e.probeOnce(ctx)
		if err == nil {
			e.probe.set(true, "ok: the compute nodes see the input and output directories")
			e.log.Info("Slurm probe job succeeded: the compute nodes see the input and output directories")
			return
		}
		if ctx.Err() != nil {
			return
		}
		e.probe.set(false, "failed, retrying: "+err.Error())
		e.log.Error("Slurm probe job failed; jobs are held until a probe succeeds", "err", err, "retry_in", probeRetry)
		sleepCtx(ctx, probeRetry)
	}
}

// probeOnce submits one probe job and waits for its end. Its script checks
// that it reads a file the server wrote under RECON_SERVER_BASE_PFILE_DIR,
// writes a file the server then reads under RECON_JOB_OUTPUT_BASE_DIR, and
// finds RECON_SCRIPT_PATH executable.
func (e *slurmExecutor) probeOnce(ctx context.Context) error {
	var b [12]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	in := filepath.Join(e.cfg.InputBaseDir, probePrefix+tok)
	out := filepath.Join(e.cfg.OutputBaseDir, probePrefix+tok)
	if err := os.WriteFile(in, []byte(tok), 0o600); err != nil {
		return fmt.Errorf("write the probe's input: %w", err)
	}
	defer os.Remove(in)
	if err := os.Mkdir(out, 0o700); err != nil {
		return fmt.Errorf("create the probe's output directory: %w", err)
	}
	defer os.RemoveAll(out)
	script := fmt.Sprintf(`#!/bin/bash
# recon probe job: do the compute nodes see the server's directories?
[ "$(cat %[1]s 2>/dev/null)" = %[2]s ] || exit %[5]d
printf %%s %[2]s >%[3]s/seen 2>/dev/null || exit %[6]d
[ -x %[4]s ] || exit %[7]d
exit 0
`, shellQuote(in), shellQuote(tok), shellQuote(out), shellQuote(e.cfg.ScriptPath), probeNoInput, probeNoOutput, probeNoScript)
	args := []string{"--job-name=" + slurmJobPrefix + "probe", "--no-requeue", "--chdir=/", "--output=/dev/null", "--error=/dev/null", "--time=5"}
	c := e.cfg.Slurm
	for opt, v := range map[string]string{"partition": c.Partition, "account": c.Account, "qos": c.QOS} {
		if v != "" {
			args = append(args, "--"+opt+"="+v)
		}
	}
	e.probe.set(false, "submitting")
	id, err := e.cli.submit(ctx, args, script)
	if err != nil {
		return fmt.Errorf("sbatch: %w", err)
	}
	e.log.Info("Slurm probe job submitted", "slurm_job_id", id)
	e.probe.set(false, "Slurm job "+id+" submitted")
	var j slurmJob
	for {
		var known bool
		j, known, err = e.poll.get(ctx, id)
		if err == nil && !known {
			return fmt.Errorf("Slurm forgot probe job %s", id)
		}
		if err == nil && slurmTerminal(j.State) {
			break
		}
		if err == nil {
			e.probe.set(false, fmt.Sprintf("Slurm job %s %s: %s", id, strings.ToLower(j.State), j.Reason))
		}
		if !sleepCtx(ctx, e.poll.wait(e.cfg.Slurm.PollInterval)) {
			e.cli.cancel(context.WithoutCancel(ctx), id)
			return ctx.Err()
		}
	}
	if j, err = e.cli.show(ctx, id); err != nil {
		return err
	}
	code, _, _ := strings.Cut(j.Exit, ":")
	switch {
	case j.State == "COMPLETED":
		if seen, err := os.ReadFile(filepath.Join(out, "seen")); err != nil || string(seen) != tok {
			return fmt.Errorf("the probe job ran, but what it wrote under RECON_JOB_OUTPUT_BASE_DIR (%s) did not reach this server: the directory must be on a filesystem the compute nodes share", e.cfg.OutputBaseDir)
		}
		return nil
	case code == fmt.Sprint(probeNoInput):
		return fmt.Errorf("the probe job could not read a file under RECON_SERVER_BASE_PFILE_DIR (%s): input directories must be on a filesystem the compute nodes share", e.cfg.InputBaseDir)
	case code == fmt.Sprint(probeNoOutput):
		return fmt.Errorf("the probe job could not write under RECON_JOB_OUTPUT_BASE_DIR (%s): output directories must be on a filesystem the compute nodes share", e.cfg.OutputBaseDir)
	case code == fmt.Sprint(probeNoScript):
		return fmt.Errorf("the probe job found no executable RECON_SCRIPT_PATH (%s) on its node", e.cfg.ScriptPath)
	}
	return errors.New(slurmEndMessage(id, j))
}

// removeProbeFiles removes what probes of an earlier run left.
func removeProbeFiles(dirs ...string) {
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, ent := range ents {
			if strings.HasPrefix(ent.Name(), probePrefix) {
				os.RemoveAll(filepath.Join(d, ent.Name()))
			}
		}
	}
}
