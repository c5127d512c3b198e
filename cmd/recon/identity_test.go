package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/servertest"
)

// releaseScript copies each input to <name>.out; an input whose name starts
// with "hold" first waits (at most 60 s) for the file release in dir.
func releaseScript(dir string) string {
	return fmt.Sprintf(`#!/bin/sh
in="$1"; out="$3"
for f in "$in"/*; do
  b=$(basename "$f")
  case "$b" in hold*)
    n=0
    while [ ! -e %q ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done;;
  esac
  cp "$f" "$out/$b.out"
done
`, filepath.Join(dir, "release"))
}

// keygenLine runs recon keygen --name and checks its form.
func keygenLine(t *testing.T, dir, name string) (line, key string) {
	t.Helper()
	r := runRecon(t, dir, "keygen", "--name", name)
	line = strings.TrimSpace(r.stdout)
	m := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + ` = ([A-Za-z0-9_-]{43}=)$`).FindStringSubmatch(line)
	if r.code != 0 || m == nil {
		t.Fatalf("recon keygen --name %s: exit %d, %q %q", name, r.code, r.stdout, r.stderr)
	}
	return line, m[1]
}

type queueJSON struct {
	Jobs []struct {
		JobID    string `json:"job_id"`
		State    string `json:"state"`
		Position int    `json:"position"`
		Identity string `json:"identity"`
	} `json:"jobs"`
}

func queueOf(t *testing.T, dir string, args ...string) queueJSON {
	t.Helper()
	r := runRecon(t, dir, args...)
	var q queueJSON
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("recon %v: exit %d, %v\n%s%s", args, r.code, err, r.stdout, r.stderr)
	}
	return q
}

// unknownID is a job id no server has.
const unknownID = "aaaaaaaaaaaaaaaaaaaaaaaaaa"

// sameAsUnknown checks that recon CMD on job id as a client answers exactly
// as for a job that does not exist: the same exit code and output, with
// the id swapped.
func sameAsUnknown(t *testing.T, dir, opts, cmd, id string, extra ...string) {
	t.Helper()
	args := func(x string) []string {
		return append(append([]string{cmd, "--opts", opts}, extra...), x)
	}
	got := runRecon(t, dir, args(id)...)
	want := runRecon(t, dir, args(unknownID)...)
	want.stdout = strings.ReplaceAll(want.stdout, unknownID, id)
	want.stderr = strings.ReplaceAll(want.stderr, unknownID, id)
	if got.code == 0 || got != want {
		t.Errorf("recon %s %v of another identity's job: exit %d %q %q; a job that does not exist: exit %d %q %q",
			cmd, extra, got.code, got.stdout, got.stderr, want.code, want.stdout, want.stderr)
	}
}

// twoScanners starts a server with SHARED_KEY (identity default) and a
// CLIENT_KEYS_FILE with alice and bob, one job at a time; it writes
// alice.opts, bob.opts, default.opts and admin.opts in dir.
func twoScanners(t *testing.T, dir string, extra ...string) (*serverProc, map[string]string) {
	t.Helper()
	aliceLine, aliceKey := keygenLine(t, dir, "alice")
	bobLine, bobKey := keygenLine(t, dir, "bob")
	writeFile(t, filepath.Join(dir, "clients.keys"), "# scanners\n"+aliceLine+"\n"+bobLine+"\n", 0o600)
	script := servertest.WriteScript(t, dir, "s.sh", releaseScript(dir))
	shared := serverOpts(t, dir, script, append([]string{"CLIENT_KEYS_FILE = clients.keys", "MAX_CONCURRENT_JOBS = 1"}, extra...)...)
	srv := startServer(t, dir, "recon.opts")
	ks := map[string]string{"alice": aliceKey, "bob": bobKey, "default": shared}
	for name, k := range ks {
		clientOpts(t, filepath.Join(dir, name+".opts"), srv.clientAddr, k)
	}
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	return srv, ks
}

// TestIdentitiesSeeOnlyTheirOwnJobs: two scanners with their own keys
// (and the SHARED_KEY one) share a server; through every client command
// each sees, waits for, fetches and cancels only its own jobs, another's
// answering exactly as a job that does not exist; queue positions are
// global; admins see every job with its identity, also in workers and in
// the log.
func TestIdentitiesSeeOnlyTheirOwnJobs(t *testing.T) {
	dir := t.TempDir()
	twoScanners(t, dir)

	a1 := submitFile(t, dir, "alice.opts", "hold.dat", "alice one")
	waitState(t, dir, "alice.opts", a1, "running")
	a2 := submitFile(t, dir, "alice.opts", "a2.dat", "alice two")
	b1 := submitFile(t, dir, "bob.opts", "b1.dat", "bob one")
	b2 := submitFile(t, dir, "bob.opts", "b2.dat", "bob two")
	d1 := submitFile(t, dir, "default.opts", "d1.dat", "default one")

	// queue: own jobs only, with their places in the whole queue.
	q := queueOf(t, dir, "queue", "--opts", "bob.opts", "--json")
	got := map[string]int{}
	for _, j := range q.Jobs {
		got[j.JobID] = j.Position
	}
	if len(q.Jobs) != 2 || got[b1] != 2 || got[b2] != 3 {
		t.Errorf("bob's queue = %+v, want only %s at 2 and %s at 3", q.Jobs, b1, b2)
	}
	r := runRecon(t, dir, "queue", "--opts", "alice.opts")
	if r.code != 0 || !strings.Contains(r.stdout, a1) || !strings.Contains(r.stdout, a2) ||
		strings.Contains(r.stdout, b1) || strings.Contains(r.stdout, d1) {
		t.Errorf("alice's queue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if q := queueOf(t, dir, "queue", "--opts", "default.opts", "--json"); len(q.Jobs) != 1 || q.Jobs[0].JobID != d1 || q.Jobs[0].Position != 4 {
		t.Errorf("default's queue = %+v, want %s at 4", q.Jobs, d1)
	}

	// status, fetch, cancel of alice's jobs by bob: as if they did not exist.
	for _, id := range []string{a1, a2} {
		sameAsUnknown(t, dir, "bob.opts", "status", id)
		sameAsUnknown(t, dir, "bob.opts", "status", id, "--json")
		sameAsUnknown(t, dir, "bob.opts", "fetch", id, "--output", "stolen")
		sameAsUnknown(t, dir, "bob.opts", "cancel", id)
		sameAsUnknown(t, dir, "default.opts", "cancel", id)
	}
	if _, err := os.Stat(filepath.Join(dir, "stolen")); err == nil {
		t.Error("bob's fetch of alice's job created its output dir")
	}

	// admin: every job, with its identity; the running job's worker too.
	aq := queueOf(t, dir, "admin", "--opts", "admin.opts", "--json", "queue")
	owners := map[string]string{}
	for _, j := range aq.Jobs {
		owners[j.JobID] = j.Identity
	}
	want := map[string]string{a1: "alice", a2: "alice", b1: "bob", b2: "bob", d1: "default"}
	for id, who := range want {
		if owners[id] != who {
			t.Errorf("admin queue: job %s identity %q, want %q (all: %v)", id, owners[id], who, owners)
		}
	}
	if r := admin(t, dir, "queue"); !strings.Contains(r.stdout, "IDENTITY") || !strings.Contains(r.stdout, "alice") {
		t.Errorf("admin queue text has no identity column:\n%s", r.stdout)
	}
	if r := admin(t, dir, "workers"); !regexp.MustCompile(a1 + `\s+alice`).MatchString(r.stdout) {
		t.Errorf("admin workers does not name the running job's identity:\n%s%s", r.stdout, r.stderr)
	}
	var w struct {
		Workers []struct {
			JobID    string `json:"job_id"`
			Identity string `json:"identity"`
		} `json:"workers"`
	}
	if r := admin(t, dir, "--json", "workers"); json.Unmarshal([]byte(r.stdout), &w) != nil || len(w.Workers) != 1 || w.Workers[0].Identity != "alice" {
		t.Errorf("admin workers --json: %s", r.stdout)
	}

	// bob cancels his own queued job; alice's are untouched.
	if r := runRecon(t, dir, "cancel", "--opts", "bob.opts", b2); r.code != 0 || !strings.Contains(r.stdout, "cancelled, was queued") {
		t.Errorf("bob cancels his job: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if st := jobState(t, dir, "bob.opts", b2); st != "cancelled" {
		t.Errorf("bob's cancelled job is %s", st)
	}
	if st := jobState(t, dir, "alice.opts", a2); st != "queued" {
		t.Errorf("alice's job is %s after bob's cancels", st)
	}

	// The jobs run; bob's fetch of alice's finished job is refused as for
	// a job that does not exist, and does not deliver it: alice still gets
	// her results.
	writeFile(t, filepath.Join(dir, "release"), "", 0o644)
	waitState(t, dir, "alice.opts", a2, "succeeded")
	sameAsUnknown(t, dir, "bob.opts", "fetch", a2, "--output", "stolen")
	sameAsUnknown(t, dir, "bob.opts", "cancel", a2)
	if r := runRecon(t, dir, "fetch", "--opts", "alice.opts", "--output", "mine", a2); r.code != 0 {
		t.Fatalf("alice fetches her job: exit %d\n%s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "mine", "a2.dat.out")); err != nil || string(b) != "alice two" {
		t.Errorf("alice's result: %q, %v", b, err)
	}
	// An ended job cannot be cancelled, by its owner either.
	if r := runRecon(t, dir, "cancel", "--opts", "alice.opts", a2); r.code == 0 || !strings.Contains(r.stderr, "already ended") {
		t.Errorf("cancel of an ended job: exit %d %q", r.code, r.stderr)
	}

	// Every log record of a session and of a job names the identity.
	log, err := os.ReadFile(filepath.Join(dir, "recon.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []struct{ msg, id, who string }{
		{"job queued", a2, "alice"}, {"job started", a2, "alice"}, {"job queued", b1, "bob"},
		{"job cancelled by its owner", b2, "bob"}, {"results delivered", a2, "alice"},
	} {
		re := regexp.MustCompile(`(?m)^.*"msg":"` + rec.msg + `".*$`)
		found := false
		for _, line := range re.FindAllString(string(log), -1) {
			if strings.Contains(line, `"job_id":"`+rec.id+`"`) && strings.Contains(line, `"identity":"`+rec.who+`"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %q log record of job %s with identity %s", rec.msg, rec.id, rec.who)
		}
	}
}

// TestKeysFileRefusedAtStart: a key used twice, or equal to the admin key,
// stops the server at start with the file and line named, and no key.
func TestKeysFileRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	line1, k1 := keygenLine(t, dir, "alice")
	script := servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript)
	for name, tc := range map[string]struct{ body, want string }{
		"twice":   {line1 + "\n\nbob = " + k1 + "\n", "clients.keys:3: bob has the same key as line 1 (alice)"},
		"rotated": {"alice = " + k1 + "," + k1 + "\n", "clients.keys:1: alice has the same key as line 1 (alice)"},
		"admin":   {"alice = ADMIN\n", "clients.keys:1: the key of alice is SERVER_ADMIN_SHARED_KEY"},
		"shared":  {"carol = SHARED\n", "clients.keys:1: carol has the same key as SHARED_KEY"},
		"badname": {"not/a/name = " + k1 + "\n", "clients.keys:1: the name is not valid"},
	} {
		t.Run(name, func(t *testing.T) {
			body := tc.body
			serverOpts(t, dir, script, "CLIENT_KEYS_FILE = clients.keys")
			opts, _ := os.ReadFile(filepath.Join(dir, "recon.opts"))
			adminKey := regexp.MustCompile(`SERVER_ADMIN_SHARED_KEY = (\S+)`).FindSubmatch(opts)[1]
			sharedKey := regexp.MustCompile(`(?m)^SHARED_KEY = (\S+)`).FindSubmatch(opts)[1]
			body = strings.ReplaceAll(body, "ADMIN", string(adminKey))
			body = strings.ReplaceAll(body, "SHARED", string(sharedKey))
			writeFile(t, filepath.Join(dir, "clients.keys"), body, 0o600)
			r := runRecon(t, dir, "server", "--opts", "recon.opts")
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("server with a bad keys file: exit %d\n%s", r.code, r.stderr)
			}
			for _, k := range [][]byte{adminKey, sharedKey, []byte(k1)} {
				if strings.Contains(r.stderr, string(k)) {
					t.Errorf("the error shows a key: %s", r.stderr)
				}
			}
		})
	}
}
