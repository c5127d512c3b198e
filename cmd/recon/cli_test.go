package main

// The command line's edges through the binary: exit codes of unknown
// commands and of a fetch that writes nothing, job-id completion, the bash
// completion script without the bash-completion package, and submit's
// resume by running the same command again.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestUnknownCommandExits2: an unknown command or argument of recon, of a
// command group (admin, relay-admin, completion) or a group without its
// command exits 2 and says what it takes, instead of printing the help
// and exiting 0.
func TestUnknownCommandExits2(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"stauts"}, `unknown command "stauts" for recon (did you mean status?)`},
		{[]string{"admin", "cancle", "x"}, `unknown command "cancle" for recon admin (did you mean cancel?); it takes: audit, cancel, logs,`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for recon completion`},
		{[]string{"completion", "tcsh"}, `it takes: bash, fish, powershell, zsh`},
		{[]string{"relay-admin", "bogus"}, `unknown command "bogus" for recon relay-admin`},
		{[]string{"admin"}, `recon admin needs a command: audit, cancel, logs,`},
		{[]string{"completion"}, `recon completion needs a command: bash`},
	} {
		r := runRecon(t, dir, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("recon %s: exit %d, stdout %d bytes, stderr %q; want exit %d and %q",
				strings.Join(c.args, " "), r.code, len(r.stdout), r.stderr, exitUsage, c.want)
		}
	}
	// recon alone still prints its help.
	if r := runRecon(t, dir); r.code != 0 || !strings.Contains(r.stdout, "Exit status:") {
		t.Errorf("recon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCompletionBashWithoutPackage loads `recon completion bash` into a
// bash that has not loaded the bash-completion package and completes
// `recon sta` and `recon admin ca`.
func TestCompletionBashWithoutPackage(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		servertest.SkipUnlessStrict(t, "no bash: %v", err)
		return
	}
	dir := t.TempDir()
	if err := os.Symlink(reconBin, filepath.Join(dir, "recon")); err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]string{"recon sta": "status", "recon admin ca": "cancel", "recon completion ba": "bash"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		script := `source <(recon completion bash) || exit 9
declare -F _init_completion >/dev/null && { echo "bash-completion is loaded"; exit 8; }
read -r -a COMP_WORDS <<< "$LINE"
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE=$LINE; COMP_POINT=${#LINE}
__start_recon 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c", script)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "LINE=" + line, "HOME=" + dir}
		out, err := cmd.CombinedOutput()
		cancel()
		words := strings.Fields(string(out))
		if err != nil || len(words) != 1 || words[0] != want {
			t.Errorf("completing %q in bash without bash-completion: %v, got %q, want %q", line, err, out, want)
		}
	}
}

// TestCompletionJobIDs: status, fetch and admin cancel complete job ids
// from the server's queue, each with its state; with the server down the
// completion says nothing, exits 0, and does not wait long.
func TestCompletionJobIDs(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	dir := t.TempDir()
	writeCLIOpts(t, filepath.Join(dir, "cli.opts"), srv, srv.Addr().String())
	in := filepath.Join(dir, "scan.dat")
	writeFile(t, in, "scan", 0o644)
	r := runRecon(t, dir, "submit", "--opts", "cli.opts", "--output", "out", "--json", in)
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	var job struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &job); err != nil || job.JobID == "" {
		t.Fatalf("submit --json: %v\n%s", err, r.stdout)
	}
	for _, args := range [][]string{
		{"__complete", "status", "--opts", "cli.opts", ""},
		{"__complete", "fetch", "--opts", "cli.opts", job.JobID[:3]},
		{"__complete", "admin", "--opts", "cli.opts", "cancel", ""},
	} {
		r := runRecon(t, dir, args...)
		if r.code != 0 || !strings.Contains(r.stdout, job.JobID+"\tsucceeded\n") {
			t.Errorf("recon %s: exit %d, want %s with its state\n%s%s", strings.Join(args, " "), r.code, job.JobID, r.stdout, r.stderr)
		}
	}
	// A second argument is not a job id.
	if r := runRecon(t, dir, "__complete", "fetch", "--opts", "cli.opts", job.JobID, ""); strings.Contains(r.stdout, job.JobID) {
		t.Errorf("fetch's second argument completes a job id:\n%s", r.stdout)
	}

	// A server that is down: nothing, quickly, exit 0.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	writeCLIOpts(t, filepath.Join(dir, "down.opts"), srv, down)
	start := time.Now()
	r = runRecon(t, dir, "__complete", "status", "--opts", "down.opts", "")
	if took := time.Since(start); r.code != 0 || strings.Contains(r.stdout, job.JobID) || took > 10*time.Second {
		t.Errorf("completion with the server down: exit %d after %v\n%s%s", r.code, took, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "connect") || strings.Contains(r.stderr, "connect") {
		t.Errorf("completion with the server down is not silent:\n%s%s", r.stdout, r.stderr)
	}
}

// TestSubmitSameFilesAgain: the same submit again says the files were
// submitted as job X and returns that job (its results downloaded before:
// exit 4, as a fetch of it); --new makes a new job, and other options make
// another job.
func TestSubmitSameFilesAgain(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	dir := t.TempDir()
	writeCLIOpts(t, filepath.Join(dir, "cli.opts"), srv, srv.Addr().String())
	in := filepath.Join(dir, "scan.dat")
	writeFile(t, in, "raw data", 0o644)
	jobOf := func(what string, r cmdResult, code int) string {
		t.Helper()
		var j struct {
			JobID string `json:"job_id"`
		}
		if r.code != code || json.Unmarshal([]byte(r.stdout), &j) != nil || j.JobID == "" {
			t.Fatalf("%s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
		}
		return j.JobID
	}
	first := jobOf("first submit", runRecon(t, dir, "submit", "--opts", "cli.opts", "--json", "--output", "out1", in), 0)

	r := runRecon(t, dir, "submit", "--opts", "cli.opts", "--json", "--output", "out2", in)
	if again := jobOf("the same submit again", r, exitNothingFetched); again != first {
		t.Errorf("the same submit again made job %s, want %s", again, first)
	}
	if !regexp.MustCompile(`these files were submitted as job `+first+` at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d`).MatchString(r.stderr) ||
		!strings.Contains(r.stderr, "nothing downloaded") {
		t.Errorf("the same submit again says:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the same submit again made its output dir: %v", err)
	}

	r = runRecon(t, dir, "fetch", "--opts", "cli.opts", first)
	if r.code != exitNothingFetched || !strings.Contains(r.stdout, "nothing downloaded") {
		t.Errorf("fetch of a job already downloaded: exit %d, want %d\n%s%s", r.code, exitNothingFetched, r.stdout, r.stderr)
	}

	renewed := jobOf("submit --new", runRecon(t, dir, "submit", "--opts", "cli.opts", "--json", "--new", "--output", "out3", in), 0)
	other := jobOf("submit --option", runRecon(t, dir, "submit", "--opts", "cli.opts", "--json", "--option", "method=pics", "--output", "out4", in), 0)
	if renewed == first || other == first || other == renewed {
		t.Errorf("jobs: first %s, --new %s, other options %s: want three", first, renewed, other)
	}
	// Changing the file makes a new submission too.
	writeFile(t, in, "raw data, changed", 0o644)
	changed := jobOf("submit of the changed file", runRecon(t, dir, "submit", "--opts", "cli.opts", "--json", "--output", "out5", in), 0)
	if changed == first || changed == renewed {
		t.Errorf("the changed file was submitted as job %s, an earlier one", changed)
	}
}

// TestSubmitInterruptedResumes: Ctrl-C (SIGINT) in the middle of a
// `recon submit` upload says how far it got, the submission id and that
// running it again resumes; the same command again sends only the rest.
func TestSubmitInterruptedResumes(t *testing.T) {
	const (
		size  = 32 << 20
		stall = 8 << 20 // the first connection forwards this much, then holds
	)
	srv := servertest.Start(t, servertest.Options{})
	proxy := startStallProxy(t, srv.Addr().String(), stall)
	dir := t.TempDir()
	writeCLIOpts(t, filepath.Join(dir, "cli.opts"), srv, proxy.addr())
	in := filepath.Join(dir, "scan.7")
	writeRandomFile(t, in, size, 3)
	args := []string{"submit", "--opts", "cli.opts", "--output", "out", in}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, reconBin, args...)
	cmd.Dir = dir
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, "the upload to reach the stall", func() bool { return proxy.up(0) >= stall })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("submit after SIGINT: %v, want exit %d\n%s", err, exitFailure, stderr.String())
	}
	said := stderr.String()
	t.Logf("interrupted submit said: %s", strings.TrimSpace(said))
	if !regexp.MustCompile(`upload interrupted after sending [0-9.]+ MiB of 32\.0 MiB \(submission id cli-[0-9a-f]{64}\).*run the same command again to resume it`).MatchString(said) {
		t.Errorf("interrupted submit does not say how far it got, its id and how to resume:\n%s", said)
	}
	proxy.closeAll() // the server sees the first connection end

	r := runRecon(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("the same submit again: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "recon: resuming the upload: the server has ") {
		t.Errorf("the second submit does not say it resumes:\n%s", r.stderr)
	}
	second := proxy.up(1)
	t.Logf("bytes sent: first run %d (held), second run %d, of %d", proxy.up(0), second, size)
	if second >= size {
		t.Errorf("the second run sent %d bytes for a file of %d: not resumed", second, size)
	}
	if kept := resumedRecords(t, srv.LogPath); len(kept) != 1 || kept[0] <= 0 {
		t.Errorf("server log: upload resumed with bytes_kept %v, want one record", kept)
	}
	if got, want := sha(t, filepath.Join(dir, "out", "scan.7.out")), sha(t, in); got != want {
		t.Errorf("output SHA-256 %s, input %s", got, want)
	}
}

// stallProxy forwards TCP connections to a target, counting each one's
// client-to-target bytes. The first connection stops forwarding
// client-to-target after stall bytes and holds (reading nothing more): a
// network that hangs in the middle of an upload. Later connections are
// forwarded whole.
type stallProxy struct {
	ln     net.Listener
	target string
	stall  int64
	mu     sync.Mutex
	counts []int64
	conns  []net.Conn
	closed chan struct{} // by closeAll
	once   sync.Once
	wg     sync.WaitGroup
}

func startStallProxy(t *testing.T, target string, stall int64) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, stall: stall, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

// up is connection i's client-to-target bytes so far (0 before it came).
func (p *stallProxy) up(i int) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= len(p.counts) {
		return 0
	}
	return p.counts[i]
}

// closeAll ends every connection so far, and the hold.
func (p *stallProxy) closeAll() {
	p.once.Do(func() { close(p.closed) })
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		i := len(p.counts)
		p.counts = append(p.counts, 0)
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		limit := int64(-1)
		if i == 0 {
			limit = p.stall
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(c, s)
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forwardUp(i, c, s, limit)
		}()
	}
}

// forwardUp copies client-to-target, at most limit bytes when limit >= 0,
// then waits for the connection to be closed.
func (p *stallProxy) forwardUp(i int, c, s net.Conn, limit int64) {
	buf := make([]byte, 32<<10)
	for {
		b := buf
		if limit >= 0 {
			left := limit - p.up(i)
			if left <= 0 {
				// Hold: read nothing more until closeAll.
				<-p.closed
				s.Close()
				return
			}
			b = buf[:min(int64(len(buf)), left)]
		}
		n, err := c.Read(b)
		if n > 0 {
			if _, werr := s.Write(b[:n]); werr != nil {
				c.Close()
				return
			}
			p.mu.Lock()
			p.counts[i] += int64(n)
			p.mu.Unlock()
		}
		if err != nil {
			s.Close()
			return
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSubmitInterruptedOnTerminal: on a terminal, the upload bar of a
// submit interrupted with Ctrl-C stays where the upload was (it was
// filled to 100% before); the same command again shows a bar for the rest
// only, after saying how much the server had.
func TestSubmitInterruptedOnTerminal(t *testing.T) {
	const (
		size  = 32 << 20
		stall = 4 << 20
	)
	srv := servertest.Start(t, servertest.Options{})
	proxy := startStallProxy(t, srv.Addr().String(), stall)
	dir := t.TempDir()
	writeCLIOpts(t, filepath.Join(dir, "cli.opts"), srv, proxy.addr())
	in := filepath.Join(dir, "scan.7")
	writeRandomFile(t, in, size, 5)
	args := []string{"submit", "--opts", "cli.opts", "--output", "out", in}

	p := startReconPTY(t, dir, args...)
	servertest.Eventually(t, 30*time.Second, "the upload to reach the stall", func() bool { return proxy.up(0) >= stall })
	// The bar is drawn at most every 100 ms: let it show the stalled state.
	servertest.Eventually(t, 10*time.Second, "the upload bar", func() bool { return strings.Contains(p.term.String(), "upload") })
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != exitFailure {
		t.Fatalf("submit after SIGINT: exit %d\n%s", code, p.term.String())
	}
	term := p.term.String()
	if strings.Contains(term, "100%") {
		t.Errorf("the interrupted upload's bar shows 100%%:\n%q", term)
	}
	if !strings.Contains(term, "upload interrupted after sending") {
		t.Errorf("the terminal lacks how far the upload got:\n%q", term)
	}
	proxy.closeAll()

	p = startReconPTY(t, dir, args...)
	if code := p.wait(t); code != 0 {
		t.Fatalf("the same submit again: exit %d\n%s", code, p.term.String())
	}
	term = p.term.String()
	if !strings.Contains(term, "recon: resuming the upload: the server has ") || !strings.Contains(term, "upload (rest)") ||
		!strings.Contains(term, "100%") {
		t.Errorf("the resumed upload's terminal:\n%q", term)
	}
}
