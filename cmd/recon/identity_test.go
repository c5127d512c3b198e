package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

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
  echo "reconstructing $b"
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
	var st struct {
		Config map[string]string `json:"config"`
	}
	if r := admin(t, dir, "--json", "status"); json.Unmarshal([]byte(r.stdout), &st) != nil || st.Config["client_identities"] != "alice,bob,default" {
		t.Errorf("admin status does not list the identities: %v", st.Config)
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
		{"script output", a2, "alice"}, {"job ended", a2, "alice"},
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

// TestIdentitiesThroughRelay: a relay with its own CLIENT_KEYS_FILE in
// front of a server with RELAY_SHARED_KEY: each scanner sees, fetches and
// cancels only its own jobs through the relay too, another's answering as
// a job that does not exist; the jobs are the identity's on the server
// (alice sees her relayed jobs directly). A relay that reaches the server
// with a client key says at start that its jobs belong to that identity.
func TestIdentitiesThroughRelay(t *testing.T) {
	dir := t.TempDir()
	_, relayKey := keygenLine(t, dir, "relay")
	srv, ks := twoScanners(t, dir, "RELAY_SHARED_KEY = "+relayKey)

	rdir := t.TempDir()
	aliceLine, aliceKey := keygenLine(t, rdir, "alice")
	bobLine, bobKey := keygenLine(t, rdir, "bob")
	writeFile(t, filepath.Join(rdir, "clients.keys"), aliceLine+"\n"+bobLine+"\n", 0o600)
	relayOpts(t, rdir, []string{srv.clientAddr}, relayKey, "CLIENT_KEYS_FILE = clients.keys")
	rp := startRelayProc(t, rdir, "relay.opts")
	if strings.Contains(rp.output(), "does not take") {
		t.Errorf("relay with the server's RELAY_SHARED_KEY says its backend does not take identities:\n%s", rp.output())
	}
	clientOpts(t, filepath.Join(dir, "ralice.opts"), rp.clientAddr, aliceKey)
	clientOpts(t, filepath.Join(dir, "rbob.opts"), rp.clientAddr, bobKey)

	a1 := submitFile(t, dir, "ralice.opts", "hold.dat", "alice one")
	waitState(t, dir, "ralice.opts", a1, "running")
	a2 := submitFile(t, dir, "ralice.opts", "a2.dat", "alice two")
	b1 := submitFile(t, dir, "rbob.opts", "b1.dat", "bob one")

	q := queueOf(t, dir, "queue", "--opts", "rbob.opts", "--json")
	if len(q.Jobs) != 1 || q.Jobs[0].JobID != b1 || q.Jobs[0].Position != 2 {
		t.Errorf("bob's queue through the relay = %+v, want only %s at 2", q.Jobs, b1)
	}
	// alice's relayed jobs are alice's on the server.
	q = queueOf(t, dir, "queue", "--opts", "alice.opts", "--json")
	if len(q.Jobs) != 2 {
		t.Errorf("alice's queue on the server = %+v, want her two relayed jobs", q.Jobs)
	}
	for _, id := range []string{a1, a2} {
		sameAsUnknown(t, dir, "rbob.opts", "status", id)
		sameAsUnknown(t, dir, "rbob.opts", "fetch", id, "--output", "stolen")
		sameAsUnknown(t, dir, "rbob.opts", "cancel", id)
	}
	if r := runRecon(t, dir, "cancel", "--opts", "rbob.opts", b1); r.code != 0 || !strings.Contains(r.stdout, "cancelled, was queued") {
		t.Errorf("bob cancels his job through the relay: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	writeFile(t, filepath.Join(dir, "release"), "", 0o644)
	waitState(t, dir, "ralice.opts", a2, "succeeded")
	sameAsUnknown(t, dir, "rbob.opts", "fetch", a2, "--output", "stolen")
	if r := runRecon(t, dir, "fetch", "--opts", "ralice.opts", "--output", "mine", a2); r.code != 0 {
		t.Fatalf("alice fetches through the relay: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "stolen")); err == nil {
		t.Error("bob's fetch through the relay created its output dir")
	}

	// The relay reloads its keys: bob is refused there, alice goes on; a
	// broken file keeps them.
	relayAdminOpts(t, filepath.Join(rdir, "radmin.opts"), rp.adminAddr, relayAdminKeyOf(t, rdir))
	writeFile(t, filepath.Join(rdir, "clients.keys"), aliceLine+"\nbroken line\n", 0o600)
	if r := runRecon(t, rdir, "relay-admin", "--opts", "radmin.opts", "reload"); r.code == 0 || !strings.Contains(r.stderr, "previous ones stay in force") {
		t.Errorf("relay reload of a broken file: exit %d %q", r.code, r.stderr)
	}
	if r := runRecon(t, dir, "queue", "--opts", "rbob.opts"); r.code != 0 {
		t.Errorf("bob through the relay after a failed reload: exit %d %q", r.code, r.stderr)
	}
	writeFile(t, filepath.Join(rdir, "clients.keys"), aliceLine+"\n", 0o600)
	if r := runRecon(t, rdir, "relay-admin", "--opts", "radmin.opts", "reload"); r.code != 0 || !strings.Contains(r.stdout, "removed   bob") {
		t.Errorf("relay reload without bob: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runRecon(t, dir, "queue", "--opts", "rbob.opts"); r.code == 0 || !strings.Contains(r.stderr, "without answering") {
		t.Errorf("bob through the relay after his removal: exit %d %q", r.code, r.stderr)
	}
	if r := runRecon(t, dir, "status", "--opts", "ralice.opts", a2); r.code != 0 {
		t.Errorf("alice through the relay after bob's removal: exit %d %q", r.code, r.stderr)
	}

	// A relay that reaches the server with alice's client key: it says so,
	// and its clients' jobs are alice's.
	r2 := t.TempDir()
	defKey, _ := relayOpts(t, r2, []string{srv.clientAddr}, ks["alice"])
	rp2 := startRelayProc(t, r2, "relay.opts")
	servertest.Eventually(t, 30*time.Second, "the relay with a client key says so at start", func() bool {
		return strings.Contains(rp2.output(), "does not take the relay's client identities")
	})
	clientOpts(t, filepath.Join(dir, "r2.opts"), rp2.clientAddr, defKey)
	j := submitFile(t, dir, "r2.opts", "via2.dat", "through a client key")
	if st := jobState(t, dir, "alice.opts", j); st == "" {
		t.Errorf("the job through a relay with alice's key is not alice's")
	}
}

// TestRevocationRotationReload: recon admin reload (and SIGHUP) read
// CLIENT_KEYS_FILE again. A removed identity's waiting session is closed
// within a second and new ones are refused, its jobs stay for admins; a
// rotated key (NAME = OLD,NEW, then NEW) keeps the identity's jobs; a file
// that fails to load leaves the keys in force and says why.
func TestRevocationRotationReload(t *testing.T) {
	dir := t.TempDir()
	srv, ks := twoScanners(t, dir)
	keysFile := filepath.Join(dir, "clients.keys")
	line := func(name, key string) string { return name + " = " + key + "\n" }

	b1 := submitFile(t, dir, "bob.opts", "hold.dat", "bob's held job")
	waitState(t, dir, "bob.opts", b1, "running")
	a1 := submitFile(t, dir, "alice.opts", "a1.dat", "alice one")

	// bob waits for his job in a session of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wait := exec.CommandContext(ctx, reconBin, "fetch", "--opts", "bob.opts", "--reconnects", "0", "--output", "bobout", b1)
	wait.Dir = dir
	waitErr := &lockedBuffer{}
	wait.Stderr = waitErr
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- wait.Wait() }()
	servertest.Eventually(t, 30*time.Second, "bob's fetch is waiting", func() bool {
		return strings.Contains(waitErr.String(), "job "+b1+": running")
	})

	// bob is removed.
	writeFile(t, keysFile, line("alice", ks["alice"]), 0o600)
	start := time.Now()
	r := admin(t, dir, "reload")
	if r.code != 0 || !strings.Contains(r.stdout, "removed   bob") || !strings.Contains(r.stdout, "sessions closed: 1") {
		t.Fatalf("reload without bob: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	select {
	case err := <-waited:
		t.Logf("bob's waiting fetch ended %v after the reload began: %v", time.Since(start), err)
		if err == nil {
			t.Error("bob's waiting fetch succeeded after bob was removed")
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("bob's session closed %v after the reload, want within a second", time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob's waiting session was not closed")
	}
	if r := runRecon(t, dir, "status", "--opts", "bob.opts"); r.code == 0 || !strings.Contains(r.stderr, "without answering") {
		t.Errorf("bob after his removal: exit %d %q", r.code, r.stderr)
	}
	if q := queueOf(t, dir, "admin", "--opts", "admin.opts", "--json", "queue"); !hasJob(q, b1, "bob") {
		t.Errorf("bob's job is gone from the admin queue: %+v", q.Jobs)
	}

	// alice rotates: old and new key, then the new one alone.
	_, newKey := keygenLine(t, dir, "alice")
	clientOpts(t, filepath.Join(dir, "alice2.opts"), srv.clientAddr, newKey)
	writeFile(t, keysFile, "alice = "+ks["alice"]+","+newKey+"\n", 0o600)
	if r := admin(t, dir, "reload"); r.code != 0 || !strings.Contains(r.stdout, "new keys  alice") || !strings.Contains(r.stdout, "sessions closed: 0") {
		t.Fatalf("reload with alice's second key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, o := range []string{"alice.opts", "alice2.opts"} {
		if st := jobState(t, dir, o, a1); st != "queued" {
			t.Errorf("alice's job through %s: %q, want queued", o, st)
		}
	}
	writeFile(t, keysFile, line("alice", newKey), 0o600)
	if r := admin(t, dir, "reload"); r.code != 0 {
		t.Fatalf("reload with alice's new key alone: exit %d\n%s", r.code, r.stderr)
	}
	if r := runRecon(t, dir, "status", "--opts", "alice.opts", a1); r.code == 0 {
		t.Error("alice's old key still works after the rotation")
	}
	if st := jobState(t, dir, "alice2.opts", a1); st != "queued" {
		t.Errorf("alice's job with her new key: %q, want queued", st)
	}

	// A broken file: the keys in force stay, and the reply and the log say why.
	writeFile(t, keysFile, line("alice", newKey)+"carol = not-a-key\n", 0o600)
	r = admin(t, dir, "reload")
	if r.code == 0 || !strings.Contains(r.stderr, "previous ones stay in force") || !strings.Contains(r.stderr, "clients.keys:2: key 1 of carol") {
		t.Errorf("reload of a broken file: exit %d %q", r.code, r.stderr)
	}
	if st := jobState(t, dir, "alice2.opts", a1); st != "queued" {
		t.Errorf("alice after a failed reload: %q, want her job", st)
	}
	if r := admin(t, dir, "logs", "--lines", "50"); !strings.Contains(r.stdout, "client keys not reloaded") {
		t.Errorf("the log does not say the reload failed:\n%s", r.stdout)
	}

	// SIGHUP reads the file too: carol may connect once it is fixed.
	_, carolKey := keygenLine(t, dir, "carol")
	clientOpts(t, filepath.Join(dir, "carol.opts"), srv.clientAddr, carolKey)
	writeFile(t, keysFile, line("alice", newKey)+line("carol", carolKey), 0o600)
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, "carol is let in after SIGHUP", func() bool {
		return runRecon(t, dir, "queue", "--opts", "carol.opts").code == 0
	})
}

// relayAdminKeyOf reads RELAY_ADMIN_SHARED_KEY from dir/relay.opts.
func relayAdminKeyOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "relay.opts"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RELAY_ADMIN_SHARED_KEY = (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no RELAY_ADMIN_SHARED_KEY in relay.opts")
	}
	return string(m[1])
}

func hasJob(q queueJSON, id, identity string) bool {
	for _, j := range q.Jobs {
		if j.JobID == id && j.Identity == identity {
			return true
		}
	}
	return false
}
