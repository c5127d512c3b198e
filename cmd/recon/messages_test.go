package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestMissingKeyAdvice: a client-side file without the key it needs says
// where that key is — the server's recon.opts — and not to generate one,
// which cannot work. recon admin with a client's file is the case a new
// user meets.
func TestMissingKeyAdvice(t *testing.T) {
	dir := t.TempDir()
	clientOpts(t, filepath.Join(dir, "client.opts"), "127.0.0.1:1", keys.MustGenerate().Encode())
	r := runRecon(t, dir, "admin", "status", "--opts", "client.opts")
	if r.code == 0 || !strings.Contains(r.stderr, "SERVER_ADMIN_SHARED_KEY is required: it is the server's admin key: copy SERVER_ADMIN_SHARED_KEY from the server's recon.opts") ||
		strings.Contains(r.stderr, "keygen") {
		t.Errorf("recon admin status with a client config: exit %d\n%s", r.code, r.stderr)
	}
	writeFile(t, filepath.Join(dir, "nokey.opts"), "SERVER_HOSTNAME = 127.0.0.1\nSERVER_PORT = 1\n", 0o600)
	r = runRecon(t, dir, "status", "--opts", "nokey.opts")
	if r.code == 0 || !strings.Contains(r.stderr, "SHARED_KEY is required: it is the server's client key: copy SHARED_KEY from the server's recon.opts") ||
		strings.Contains(r.stderr, "keygen") {
		t.Errorf("recon status with a config without SHARED_KEY: exit %d\n%s", r.code, r.stderr)
	}
}

// TestFetchOfJobCancelledWhileRunning: fetching a job an administrator
// cancelled while it ran says that it ended without results and why — not
// that its results were delivered or expired.
func TestFetchOfJobCancelledWhileRunning(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", "#!/bin/sh\nexec sleep 60\n"))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	id := submitFile(t, dir, "client.opts", "a.cfl", "data")
	waitState(t, dir, "client.opts", id, "running")
	if r := admin(t, dir, "cancel", id); r.code != 0 {
		t.Fatalf("admin cancel: exit %d\n%s", r.code, r.stderr)
	}
	r := runRecon(t, dir, "fetch", "--opts", "client.opts", id)
	if !strings.Contains(r.stdout, "none: the job was cancelled and ended without results: cancelled by an administrator; nothing downloaded") ||
		strings.Contains(r.stdout, "delivered or expired") {
		t.Errorf("recon fetch of a job cancelled while running: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r.code != exitJobFailed {
		t.Errorf("recon fetch of a cancelled job: exit %d, want %d", r.code, exitJobFailed)
	}
}

// TestSameNameGivenTwice: the same file given twice (on Linux, where names
// are case-sensitive) is refused as a name given twice, not as a clash on
// a case-insensitive file system; two files of the same name in two
// directories too.
func TestSameNameGivenTwice(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	for _, d := range []string{"x", "y"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, d, "ph.cfl"), "data "+d, 0o644)
	}
	for _, files := range [][]string{{"x/ph.cfl", "x/ph.cfl"}, {"x/ph.cfl", "y/ph.cfl"}} {
		r := runRecon(t, dir, append([]string{"submit", "--opts", "client.opts", "--no-wait"}, files...)...)
		if r.code == 0 || !strings.Contains(r.stderr, `file name "ph.cfl" is given twice`) || strings.Contains(r.stderr, "case-insensitive") {
			t.Errorf("recon submit %v: exit %d\n%s", files, r.code, r.stderr)
		}
	}
}

// TestServerChecksScriptAtStart: a script the server could not run is
// refused when the server starts, saying what is wrong with it; a script
// with an interpreter line and a binary program are accepted.
func TestServerChecksScriptAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		want       string
	}{
		{"missing", "", 0, "no such file"},
		{"noexec.sh", "#!/bin/sh\n", 0o644, "is not executable"},
		{"nohashbang.sh", "cp \"$1\"/* \"$3\"\n", 0o755, "has no interpreter line (#!) and is not a binary program; the server runs it directly, without a shell"},
		{"empty.sh", "", 0o755, "is empty"},
		{"badinterp.sh", "#!/no/such/sh\n", 0o755, "its interpreter /no/such/sh (from its #! line)"},
		{"crlf.sh", "#!/bin/sh\r\necho\r\n", 0o755, "carriage return"},
	} {
		script := filepath.Join(dir, tc.name)
		if tc.mode != 0 {
			writeFile(t, script, tc.body, tc.mode)
		}
		serverOpts(t, dir, script)
		r := runRecon(t, dir, "server", "--opts", "recon.opts")
		if r.code == 0 || !strings.Contains(r.stderr, "RECON_SCRIPT_PATH "+script) && tc.name != "missing" || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("server with script %s: exit %d, stderr:\n%s\nwant %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
	// A binary program is run as it is.
	bin := filepath.Join(dir, "true")
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bin, string(b), 0o755)
	serverOpts(t, dir, bin)
	startServer(t, dir, "recon.opts").stop(t)
}

// TestMisspeltKeyWarningInLog: a misspelt key in the server's config is
// warned about on standard error and in the log file.
func TestMisspeltKeyWarningInLog(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "MAX_CONCURENT_JOBS = 2")
	srv := startServer(t, dir, "recon.opts")
	if !strings.Contains(srv.stderr.String(), "unknown key MAX_CONCURENT_JOBS") {
		t.Errorf("stderr has no warning about MAX_CONCURENT_JOBS:\n%s", srv.stderr.String())
	}
	servertest.Eventually(t, 10*time.Second, "the warning in the log file", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
		return strings.Contains(string(b), `"msg":"config warning"`) && strings.Contains(string(b), "unknown key MAX_CONCURENT_JOBS (did you mean MAX_CONCURRENT_JOBS?)")
	})
}
