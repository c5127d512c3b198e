package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// logRecord is one JSON record of a log file, with its text.
type logRecord struct {
	text  string
	attrs map[string]any
}

func (r logRecord) str(k string) string { s, _ := r.attrs[k].(string); return s }

// readLog parses every line of the JSON log file at path.
func readLog(t *testing.T, path string) []logRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []logRecord
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: record %q is not JSON: %v", path, line, err)
		}
		recs = append(recs, logRecord{line, m})
	}
	return recs
}

// optsValue returns the value of key in the config file at path.
func optsValue(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return ""
}

// keyForms returns the ways a key could show in a log: its text, its bytes
// in the base64 alphabets with and without padding, and in hex.
func keyForms(t *testing.T, text string) []string {
	t.Helper()
	k, err := keys.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	b := k.Bytes()
	forms := []string{text, hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString(b))
	}
	return forms
}

// wrongKeyHandshake connects to addr with a fresh key: the server logs a
// failed handshake.
func wrongKeyHandshake(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := secure.Dial(ctx, addr, secure.Config{Key: keys.MustGenerate(), Role: secure.RoleClient})
	if err == nil {
		c.Close()
		t.Fatal("handshake with a wrong key succeeded")
	}
}

// TestLogLevelHonoured runs the same work against a server at WARNING and
// one at DEBUG: the first writes no record below WARN (and does write the
// warning of a failed handshake), the second writes debug records.
func TestLogLevelHonoured(t *testing.T) {
	for _, tt := range []struct {
		level     string
		forbidden []string // levels that must not appear
		want      []string // messages that must
	}{
		{"WARNING", []string{"DEBUG", "INFO"}, []string{"handshake failed"}},
		{"DEBUG", nil, []string{"handshake failed", "connection accepted", "session authenticated", "script started", "job started"}},
	} {
		t.Run(tt.level, func(t *testing.T) {
			dir := t.TempDir()
			key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "LOG_LEVEL = "+tt.level)
			srv := startServer(t, dir, "recon.opts")
			clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
			writeFile(t, filepath.Join(dir, "P1.7"), "raw", 0o644)
			if r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "P1.7"); r.code != 0 {
				t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
			}
			wrongKeyHandshake(t, srv.clientAddr)
			srv.stop(t)
			seen := map[string]bool{}
			for _, r := range readLog(t, filepath.Join(dir, "recon.log")) {
				seen[r.str("msg")] = true
				for _, l := range tt.forbidden {
					if r.str("level") == l {
						t.Errorf("LOG_LEVEL = %s, yet a %s record: %s", tt.level, l, r.text)
					}
				}
			}
			for _, m := range tt.want {
				if !seen[m] {
					t.Errorf("LOG_LEVEL = %s: no %q record", tt.level, m)
				}
			}
		})
	}
}

// TestLogRecords checks, through the binary at LOG_LEVEL DEBUG, what the
// issue asks of the log: no key material and no file contents in any
// record; every record about a job carries job_id; connection records
// (accept, refusal, handshake, close) carry peer and conn_id; script output
// lines are records with job_id and stream.
func TestLogRecords(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
echo "line to stdout"
echo "line to stderr" >&2
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`), "LOG_LEVEL = DEBUG", "TRUSTED_IPS = 127.0.0.1")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)

	// The file's content is a random marker that must not reach the log.
	var m [16]byte
	rand.Read(m[:])
	marker := "MARKER-" + hex.EncodeToString(m[:])
	writeFile(t, filepath.Join(dir, "P1.7"), marker+"\n"+marker, 0o644)
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "--json", "P1.7")
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	var job struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &job); err != nil || job.JobID == "" {
		t.Fatalf("submit --json: %v\n%s", err, r.stdout)
	}
	for _, args := range [][]string{{"status"}, {"queue"}, {"logs", "--lines", "5"}} {
		if r := runRecon(t, dir, append([]string{"admin", "--opts", "admin.opts"}, args...)...); r.code != 0 {
			t.Fatalf("admin %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	wrongKeyHandshake(t, srv.clientAddr)
	// 127.0.0.2 is loopback too, but not in TRUSTED_IPS: refused.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", srv.clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	refusedPeer := c.LocalAddr().String()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	c.Read(make([]byte, 1)) // until the server closes it
	c.Close()
	srv.stop(t)

	logPath := filepath.Join(dir, "recon.log")
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string][]string{"file content": {marker}}
	forbidden["SHARED_KEY"] = keyForms(t, optsValue(t, filepath.Join(dir, "recon.opts"), "SHARED_KEY"))
	forbidden["SERVER_ADMIN_SHARED_KEY"] = keyForms(t, optsValue(t, filepath.Join(dir, "recon.opts"), "SERVER_ADMIN_SHARED_KEY"))
	for what, forms := range forbidden {
		for _, f := range forms {
			if strings.Contains(string(raw), f) {
				t.Errorf("the log holds the %s (as %q)", what, f)
			}
		}
	}

	connMsgs := map[string]bool{
		"connection accepted": true, "connection closed": true, "session authenticated": true, "handshake failed": true,
		"connection refused: address not in the allow-list": true, "connection refused: too many connections": true,
		"connection evicted: the oldest in the handshake from its address, for a newer one": true,
	}
	seen := map[string]int{}
	streams := map[string]string{}
	for _, r := range readLog(t, logPath) {
		msg := r.str("msg")
		seen[msg]++
		aboutJob := strings.HasPrefix(msg, "job ") || strings.HasPrefix(msg, "script ") || strings.HasPrefix(msg, "results ")
		if aboutJob && r.str("job_id") != job.JobID {
			t.Errorf("record about a job has job_id %q, want %s: %s", r.str("job_id"), job.JobID, r.text)
		}
		if connMsgs[msg] {
			if r.str("conn_id") == "" || r.str("peer") == "" {
				t.Errorf("connection record without conn_id or peer: %s", r.text)
			}
			if strings.HasPrefix(msg, "connection refused") && r.str("peer") != refusedPeer {
				t.Errorf("refusal record names peer %q, want %s: %s", r.str("peer"), refusedPeer, r.text)
			}
		}
		if msg == "script output" {
			if r.str("job_id") == "" || r.str("stream") == "" {
				t.Errorf("script output record without job_id or stream: %s", r.text)
			}
			streams[r.str("stream")] = r.str("line")
		}
	}
	// The checks above are not vacuous: each kind of record was written.
	for _, msg := range []string{"job queued", "job started", "script started", "script output", "job ended", "results delivered",
		"connection accepted", "session authenticated", "connection closed", "handshake failed",
		"connection refused: address not in the allow-list"} {
		if seen[msg] == 0 {
			t.Errorf("no %q record in the log", msg)
		}
	}
	if streams["stdout"] != "line to stdout" || streams["stderr"] != "line to stderr" || len(streams) != 2 {
		t.Errorf("script output lines by stream: %q", streams)
	}
}

// TestLogRotationSIGHUP rotates the log as logrotate does (rename, then
// SIGHUP): the server writes on into a fresh LOG_FILEPATH, and admin logs
// reads across the current and the rotated file.
func TestLogRotationSIGHUP(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	submit := func(name string) string {
		t.Helper()
		writeFile(t, filepath.Join(dir, name), "raw "+name, 0o644)
		r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out-"+name, "--json", name)
		var job struct {
			JobID string `json:"job_id"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &job) != nil || job.JobID == "" {
			t.Fatalf("submit %s: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
		}
		return job.JobID
	}
	// jobIDs returns the job ids of the job queued records in path.
	queued := func(path string) map[string]bool {
		ids := map[string]bool{}
		for _, r := range readLog(t, path) {
			if r.str("msg") == "job queued" {
				ids[r.str("job_id")] = true
			}
		}
		return ids
	}

	before := submit("P1.7")
	logPath := filepath.Join(dir, "recon.log")
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "log reopened after SIGHUP", func() bool {
		b, err := os.ReadFile(logPath)
		return err == nil && strings.Contains(string(b), "log file reopened")
	})
	after := submit("P2.7")

	if got := queued(logPath); !got[after] || got[before] {
		t.Errorf("job queued records in the new log: %v, want %s only", got, after)
	}
	if got := queued(logPath + ".1"); !got[before] || got[after] {
		t.Errorf("job queued records in the rotated log: %v, want %s only", got, before)
	}
	// admin logs reads across the rotation: the records of both jobs,
	// and --jobid finds the first job in the rotated file.
	r := runRecon(t, dir, "admin", "--opts", "admin.opts", "logs", "--lines", "1000")
	if r.code != 0 {
		t.Fatalf("admin logs: exit %d\n%s", r.code, r.stderr)
	}
	for _, id := range []string{before, after} {
		if !strings.Contains(r.stdout, `"job_id":"`+id+`"`) {
			t.Errorf("admin logs --lines 1000 lacks the records of job %s:\n%s", id, r.stdout)
		}
	}
	r = runRecon(t, dir, "admin", "--opts", "admin.opts", "logs", "--lines", "1000", "--jobid", before)
	if r.code != 0 || !strings.Contains(r.stdout, `"msg":"job queued"`) || !strings.Contains(r.stdout, `"msg":"job ended"`) {
		t.Errorf("admin logs --jobid %s (a job of the rotated file): exit %d\n%s%s", before, r.code, r.stdout, r.stderr)
	}
	// The server lives on after SIGHUP and stops cleanly.
	srv.stop(t)
	if srv.cmd.ProcessState == nil || !srv.cmd.ProcessState.Success() {
		t.Errorf("server after SIGHUP: %v\n%s", srv.cmd.ProcessState, srv.stderr)
	}
}

// TestLogRotationSIGHUPRelayAndWatch: the relay and the watch daemon, like
// the server, reopen their log file on SIGHUP (logrotate renames it first)
// and go on serving; SIGHUP does not end them.
func TestLogRotationSIGHUPRelayAndWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")

	// rotate renames path to path.1, sends SIGHUP to pid and waits for the
	// reopened file's first record.
	rotate := func(pid int, path string) {
		t.Helper()
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		servertest.Eventually(t, 20*time.Second, "log reopened after SIGHUP: "+path, func() bool {
			b, err := os.ReadFile(path)
			return err == nil && strings.Contains(string(b), "log file reopened (SIGHUP)")
		})
	}

	t.Run("relay", func(t *testing.T) {
		rdir := filepath.Join(dir, "relay")
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		clientKey, _ := relayOpts(t, rdir, []string{srv.clientAddr}, key)
		r := startRelayProc(t, rdir, "relay.opts")
		clientOpts(t, filepath.Join(rdir, "client.opts"), r.clientAddr, clientKey)
		logPath := filepath.Join(rdir, "relay.log")
		servertest.Eventually(t, 20*time.Second, "relay log written", func() bool {
			_, err := os.Stat(logPath)
			return err == nil
		})
		rotate(r.cmd.Process.Pid, logPath)
		// Still serving.
		if res := runRecon(t, rdir, "status", "--opts", "client.opts"); res.code != 0 {
			t.Fatalf("status through the relay after SIGHUP: exit %d\n%s", res.code, res.stderr)
		}
		r.stop(t) // a clean exit after SIGTERM, checked by stop
	})

	t.Run("watch", func(t *testing.T) {
		wdir := filepath.Join(dir, "watch")
		if err := os.MkdirAll(filepath.Join(wdir, "scanner"), 0o700); err != nil {
			t.Fatal(err)
		}
		watchOpts(t, wdir, srv.clientAddr, key)
		p := startWatch(t, ctx, wdir)
		logPath := filepath.Join(wdir, "watch.log")
		servertest.Eventually(t, 20*time.Second, "watch log written", func() bool {
			_, err := os.Stat(logPath)
			return err == nil
		})
		rotate(p.cmd.Process.Pid, logPath)
		// Still watching: a new file goes through, recorded in the new log.
		writeFile(t, filepath.Join(wdir, "scanner", "P1.7"), "raw after rotation", 0o644)
		servertest.Eventually(t, 40*time.Second, "group done after the rotation", func() bool {
			return len(servertest.LogRecords(t, logPath, "group done")) == 1
		})
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(t, ctx); err != nil {
			t.Errorf("recon watch after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	})
}
