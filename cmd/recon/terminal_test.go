package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/recon-mri/recon/internal/servertest"
)

// ptyRecon is a recon process whose standard error is a pseudo-terminal
// and whose standard output is a pipe.
type ptyRecon struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	term   lockedBuffer  // what it wrote to the terminal
	read   chan struct{} // closed once the terminal is read to its end
	done   chan struct{} // closed once the process has exited
	err    error         // of cmd.Wait, once done is closed
}

// startReconPTY starts recon with args in dir, standard error on a new
// pseudo-terminal. The process is killed when the test ends.
func startReconPTY(t *testing.T, dir string, args ...string) *ptyRecon {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		servertest.SkipUnlessStrict(t, "no pseudo-terminal on this machine: %v", err)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	p := &ptyRecon{read: make(chan struct{}), done: make(chan struct{})}
	p.cmd = exec.Command(reconBin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = tty
	if err := p.cmd.Start(); err != nil {
		ptmx.Close()
		tty.Close()
		t.Fatal(err)
	}
	tty.Close() // the child holds it now: reads end (EIO) when it exits
	go func() {
		defer close(p.read)
		io.Copy(&p.term, ptmx)
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		select {
		case <-p.read:
		case <-time.After(10 * time.Second):
		}
		ptmx.Close()
	})
	return p
}

// wait waits for the process to exit and its terminal output to be read,
// and returns its exit code.
func (p *ptyRecon) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("recon did not exit in time; terminal:\n%s", p.term.String())
	}
	select {
	case <-p.read:
	case <-time.After(10 * time.Second):
		t.Fatalf("the terminal was not closed after recon exited")
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// gateScript copies each input to <name>.out once the file
// release-$RECON_OPT_GATE exists in dir.
func gateScript(dir string) string {
	return `#!/bin/sh
set -eu
while [ ! -e "` + dir + `/release-$RECON_OPT_GATE" ]; do sleep 0.02; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`
}

// A bar of the progress bar library: the description, then bytes done and
// total, and the rate, e.g. "upload 100% |████| (16/16 MB, 95 MB/s)".
var (
	uploadBarRE   = regexp.MustCompile(`upload\s+\d+%.*\(\d+(\.\d+)?/\d+(\.\d+)? [kMG]?B, \d+(\.\d+)? [kMG]?B/s\)`)
	downloadBarRE = regexp.MustCompile(`download\s+\d+%.*\(\d+(\.\d+)?/\d+(\.\d+)? [kMG]?B, \d+(\.\d+)? [kMG]?B/s\)`)
)

// TestSubmitOnTerminal runs `recon submit` with standard error on a
// pseudo-terminal: it shows progress bars for the upload and the download,
// and the job's states as they happen (queued with its position, running,
// the end). The job is held queued, then running, until the test has seen
// each state on the terminal.
func TestSubmitOnTerminal(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", gateScript(dir)), "MAX_CONCURRENT_JOBS = 1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	t.Cleanup(func() { // let the scripts end if the test fails
		for _, g := range []string{"first", "second"} {
			os.WriteFile(filepath.Join(dir, "release-"+g), nil, 0o600)
		}
	})
	writeFile(t, filepath.Join(dir, "first.7"), "first", 0o644)
	writeRandomFile(t, filepath.Join(dir, "scan.7"), 16<<20, 7)

	// A first job holds the only worker.
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--no-wait", "--option", "GATE=first", "first.7")
	first := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("submit first job: exit %d\n%s", r.code, r.stderr)
	}
	servertest.Eventually(t, 30*time.Second, "the first job runs", func() bool {
		st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", first)
		return strings.Contains(st.stdout, `"state": "running"`)
	})

	p := startReconPTY(t, dir, "submit", "--opts", "client.opts", "--option", "GATE=second", "--output", "out", "scan.7")
	waitTerm := func(what string, re *regexp.Regexp) {
		t.Helper()
		servertest.Eventually(t, 30*time.Second, what+" on the terminal", func() bool {
			return re.MatchString(p.term.String())
		})
	}
	waitTerm("queued (position 1)", regexp.MustCompile(`job [a-z0-9]+: queued \(position 1\)`))
	os.WriteFile(filepath.Join(dir, "release-first"), nil, 0o600)
	waitTerm("running", regexp.MustCompile(`job [a-z0-9]+: running`))
	os.WriteFile(filepath.Join(dir, "release-second"), nil, 0o600)
	code := p.wait(t)
	term := p.term.String()
	if code != 0 {
		t.Fatalf("submit on a terminal: exit %d\nterminal:\n%s\nstdout:\n%s", code, term, p.stdout.String())
	}
	if !regexp.MustCompile(`job [a-z0-9]+: succeeded`).MatchString(term) {
		t.Errorf("the terminal does not show the job's end:\n%q", term)
	}
	// The states come in order.
	q := strings.Index(term, "queued (position 1)")
	run := strings.Index(term, ": running")
	end := strings.Index(term, ": succeeded")
	if !(q >= 0 && q < run && run < end) {
		t.Errorf("states out of order (queued at %d, running at %d, succeeded at %d):\n%q", q, run, end, term)
	}
	if !uploadBarRE.MatchString(term) {
		t.Errorf("no upload progress (bytes, rate) on the terminal:\n%q", term)
	}
	if !downloadBarRE.MatchString(term) {
		t.Errorf("no download progress (bytes, rate) on the terminal:\n%q", term)
	}
	// The summary goes to standard output, without progress.
	out := p.stdout.String()
	if !strings.Contains(out, "succeeded") || !strings.Contains(out, "scan.7.out") {
		t.Errorf("stdout lacks the job's summary:\n%s", out)
	}
	if strings.ContainsAny(out, "\r%") {
		t.Errorf("progress in stdout:\n%q", out)
	}
	if sha(t, filepath.Join(dir, "out", "scan.7.out")) != sha(t, filepath.Join(dir, "scan.7")) {
		t.Error("scan.7 did not come back unchanged")
	}
}

// TestSubmitJSONOnTerminal checks that with --json standard output is
// exactly one JSON document while the terminal on standard error still
// shows progress and the job's states.
func TestSubmitJSONOnTerminal(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", gateScript(dir)))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	writeFile(t, filepath.Join(dir, "release-open"), "", 0o600)
	writeRandomFile(t, filepath.Join(dir, "scan.7"), 16<<20, 9)

	p := startReconPTY(t, dir, "submit", "--opts", "client.opts", "--json", "--option", "GATE=open", "--output", "out", "scan.7")
	code := p.wait(t)
	term, out := p.term.String(), p.stdout.String()
	if code != 0 {
		t.Fatalf("submit --json on a terminal: exit %d\nterminal:\n%s\nstdout:\n%s", code, term, out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var doc struct {
		JobID   string `json:"job_id"`
		State   string `json:"state"`
		Results []struct {
			Name string `json:"name"`
			Path string `json:"path"`
		} `json:"results"`
	}
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%q", err, out)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Errorf("stdout holds more than one JSON document (%v):\n%q", err, out)
	}
	if doc.State != "succeeded" || len(doc.Results) != 1 || doc.Results[0].Name != "scan.7.out" {
		t.Errorf("submit --json = %+v, want succeeded with scan.7.out", doc)
	}
	if strings.ContainsAny(out, "\r%") || strings.Contains(out, "upload") || strings.Contains(out, "B/s") {
		t.Errorf("progress in the JSON output:\n%q", out)
	}
	if !uploadBarRE.MatchString(term) || !downloadBarRE.MatchString(term) {
		t.Errorf("with --json the terminal lacks upload or download progress (bytes, rate):\n%q", term)
	}
	if !strings.Contains(term, doc.JobID+": succeeded") {
		t.Errorf("with --json the terminal lacks the job's end:\n%q", term)
	}
}
