package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// auditRecord is what the tests read of an audit record.
type auditRecord struct {
	Seq      uint64 `json:"seq"`
	Kind     string `json:"kind"`
	Identity string `json:"identity"`
	Role     string `json:"role"`
	Peer     string `json:"peer"`
	JobID    string `json:"job_id"`
	Command  string `json:"command"`
	Request  string `json:"request"`
	Files    []struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
		BLAKE3 string `json:"blake3"`
	} `json:"files"`
	Failures int      `json:"failures"`
	Removed  []string `json:"removed"`
	Error    string   `json:"error"`
	Prev     string   `json:"prev"`
}

func auditRecords(t *testing.T, dir string, args ...string) []auditRecord {
	t.Helper()
	var out struct {
		Records []auditRecord `json:"records"`
	}
	adminJSON(t, dir, &out, append([]string{"audit"}, args...)...)
	return out.Records
}

// TestAuditTrail runs a submission, a download, an admin request and a
// failed handshake through the binary and the real server, and reads
// each back with recon admin audit.
func TestAuditTrail(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	content := strings.Repeat("k-space ", 1000)
	writeFile(t, filepath.Join(dir, "P00000.7"), content, 0o644)
	sum, b3 := sha256.Sum256([]byte(content)), blake3.Sum256([]byte(content))

	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--json", "--output", "out", "P00000.7")
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	var job struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &job); err != nil {
		t.Fatal(err)
	}
	if r := admin(t, dir, "cancel", job.JobID); r.code == 0 {
		t.Fatalf("cancel of a finished job succeeded")
	}
	// A client with a wrong key.
	clientOpts(t, filepath.Join(dir, "wrong.opts"), srv.clientAddr, keys.MustGenerate().Encode())
	runRecon(t, dir, "queue", "--opts", "wrong.opts")

	recs := auditRecords(t, dir)
	var kinds []string
	var sawSubmit, sawFetch, sawConfirm, sawAdminCancel, sawClientAuth, sawAdminAuth bool
	for _, rec := range recs {
		kinds = append(kinds, rec.Kind)
		switch {
		case rec.Kind == "submit":
			sawSubmit = rec.JobID == job.JobID && rec.Identity == "default" && strings.HasPrefix(rec.Peer, "127.0.0.1:") &&
				len(rec.Files) == 1 && rec.Files[0].Name == "P00000.7" && rec.Files[0].Size == int64(len(content)) &&
				rec.Files[0].BLAKE3 == hex.EncodeToString(b3[:]) && rec.Files[0].SHA256 == "" // the session's hash
		case rec.Kind == "fetch":
			sawFetch = rec.JobID == job.JobID && len(rec.Files) == 1 && rec.Files[0].Name == "P00000.7.out" &&
				rec.Files[0].SHA256 == hex.EncodeToString(sum[:]) && rec.Files[0].BLAKE3 == hex.EncodeToString(b3[:])
		case rec.Kind == "fetch_confirmed":
			// The digest the client verified before it confirmed.
			sawConfirm = rec.JobID == job.JobID && len(rec.Files) == 1 && rec.Files[0].BLAKE3 == hex.EncodeToString(b3[:])
		case rec.Kind == "admin" && rec.Command == "admin_cancel":
			sawAdminCancel = strings.Contains(rec.Request, job.JobID) && rec.Identity == "admin"
		case rec.Kind == "auth" && rec.Role == "client":
			sawClientAuth = rec.Identity == "default"
		case rec.Kind == "auth" && rec.Role == "admin":
			sawAdminAuth = true
		}
	}
	if !sawSubmit || !sawFetch || !sawConfirm || !sawAdminCancel || !sawClientAuth || !sawAdminAuth {
		t.Fatalf("audit records %v: submit %v fetch %v confirmed %v admin cancel %v client auth %v admin auth %v\n%+v",
			kinds, sawSubmit, sawFetch, sawConfirm, sawAdminCancel, sawClientAuth, sawAdminAuth, recs)
	}
	// The listing itself is an admin request, audited before it is read.
	if last := recs[len(recs)-1]; last.Kind != "admin" || last.Command != "admin_audit" {
		t.Errorf("the last record is %+v, want the admin_audit request that read it", last)
	}

	byJob := auditRecords(t, dir, "--job", job.JobID)
	if len(byJob) != 3 {
		t.Errorf("--job %s: %d records, want submit, fetch, fetch_confirmed", job.JobID, len(byJob))
	}
	for _, rec := range byJob {
		if rec.JobID != job.JobID {
			t.Errorf("--job %s gave %+v", job.JobID, rec)
		}
	}
	if recs := auditRecords(t, dir, "--since", "2999-01-01"); len(recs) != 0 {
		t.Errorf("--since 2999-01-01 gave %d records", len(recs))
	}
	if recs := auditRecords(t, dir, "--identity", "nobody"); len(recs) != 0 {
		t.Errorf("--identity nobody gave %d records", len(recs))
	}
	if r := admin(t, dir, "audit"); r.code != 0 || !strings.Contains(r.stdout, "submit") || !strings.Contains(r.stdout, "1 files") {
		t.Errorf("admin audit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := admin(t, dir, "audit", "--since", "yesterday"); r.code != 2 {
		t.Errorf("--since yesterday: exit %d, want 2\n%s", r.code, r.stderr)
	}

	r = admin(t, dir, "audit", "--verify")
	if r.code != 0 || !strings.Contains(r.stdout, "intact") {
		t.Fatalf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The failed handshake is summarised when the server stops.
	srv.stop(t)
	b, err := os.ReadFile(filepath.Join(dir, "recon_audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"kind":"auth_failures","peer":"127.0.0.1","failures":`)) {
		t.Errorf("no summary of the failed handshake in the audit file:\n%s", b)
	}
}

// TestAuditVerifyDetectsTampering changes the audit file of a running
// server each way the issue names; recon admin audit --verify must exit 1
// naming the first bad line, and 0 again once the file is restored.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	for i := range 3 {
		submitFile(t, dir, "client.opts", fmt.Sprintf("in%d.7", i), "raw")
	}
	path := filepath.Join(dir, "recon_audit.jsonl")

	lineOf := func(lines [][]byte, kind string) int {
		for i, l := range lines {
			if bytes.Contains(l, []byte(`"kind":"`+kind+`"`)) {
				return i
			}
		}
		t.Fatalf("no %s record", kind)
		return 0
	}
	tests := []struct {
		name   string
		tamper func(lines [][]byte) ([][]byte, int) // the new lines, and the 1-based line to be named
		want   string
	}{
		{"edited line", func(ls [][]byte) ([][]byte, int) {
			i := lineOf(ls, "submit")
			ls[i] = bytes.Replace(ls[i], []byte(`"size":3`), []byte(`"size":4`), 1)
			return ls, i + 1
		}, "changed"},
		{"deleted line", func(ls [][]byte) ([][]byte, int) {
			i := lineOf(ls, "submit")
			return append(ls[:i:i], ls[i+1:]...), i + 1
		}, "missing"},
		{"inserted line", func(ls [][]byte) ([][]byte, int) {
			i := lineOf(ls, "submit")
			// A record that chains to the line before, as the server's
			// would: only the next line shows it.
			var prev auditRecord
			json.Unmarshal(ls[i], &prev)
			h := sha256.Sum256(bytes.TrimSuffix(ls[i], []byte("\n")))
			forged := fmt.Sprintf(`{"seq":%d,"time":"2026-12-07T20:00:00Z","kind":"cancel","identity":"x","prev":"%s"}`+"\n", prev.Seq+1, hex.EncodeToString(h[:]))
			out := append([][]byte{}, ls[:i+1]...)
			out = append(out, []byte(forged))
			return append(out, ls[i+1:]...), i + 2
		}, "inserted"},
		{"truncated tail", func(ls [][]byte) ([][]byte, int) {
			// The verification's own records follow the cut: a gap.
			n := len(ls) - 3
			return ls[:n], n + 1
		}, "missing"},
		{"wholly rewritten", func(ls [][]byte) ([][]byte, int) {
			// A fresh chain of the same length from genesis.
			var out [][]byte
			prev := strings.Repeat("0", 64)
			for i := range bytes.Count(bytes.Join(ls, nil), []byte("\n")) {
				l := fmt.Sprintf(`{"seq":%d,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"%s"}`, i+1, prev)
				h := sha256.Sum256([]byte(l))
				prev = hex.EncodeToString(h[:])
				out = append(out, []byte(l+"\n"))
			}
			// The server's next record chains to the real head: the
			// last rewritten line is the one it does not follow.
			return out, len(out)
		}, "changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines, bad := tt.tamper(bytes.SplitAfter(bytes.Clone(orig), []byte("\n")))
			if last := lines[len(lines)-1]; len(last) == 0 {
				lines = lines[:len(lines)-1]
			}
			tampered := bytes.Join(lines, nil)
			writeFile(t, path, string(tampered), 0o600)
			r := admin(t, dir, "audit", "--verify")
			want := fmt.Sprintf("recon_audit.jsonl line %d: ", bad)
			if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("verify after %s: exit %d, want 1 naming %q (%s)\n%s%s", tt.name, r.code, want, tt.want, r.stdout, r.stderr)
			}
			// Put back what was there; what the server appended since
			// stays after it.
			now, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, string(orig)+string(now[len(tampered):]), 0o600)
			if r := admin(t, dir, "audit", "--verify"); r.code != 0 {
				t.Fatalf("verify after restoring: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}

	// A file cut short while the server is stopped is still caught after
	// the restart: the head in the state directory says how far it went.
	srv.stop(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	writeFile(t, path, string(bytes.Join(lines[:len(lines)-4], nil)), 0o600)
	srv = startServer(t, dir, "recon.opts")
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	r := admin(t, dir, "audit", "--verify", "--json")
	var v struct {
		OK   bool   `json:"ok"`
		File string `json:"file"`
		Line int    `json:"line"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 1 || v.OK || v.Line != len(lines)-3 {
		t.Fatalf("verify --json after a cut while stopped: exit %d, %+v (want line %d)\n%s%s", r.code, v, len(lines)-3, r.stdout, r.stderr)
	}
}

// TestAuditIdentities: with a keys file, the audit trail names the
// identity of each session and action: alice's session and submission,
// her own cancel (recorded before it takes effect, also when refused for
// another identity's job), and a key reload naming the identity removed,
// never a key; a reload of a broken file is recorded with its error.
func TestAuditIdentities(t *testing.T) {
	dir := t.TempDir()
	_, ks := twoScanners(t, dir)
	id := submitFile(t, dir, "alice.opts", "hold.dat", "alice's held job")
	if r := runRecon(t, dir, "cancel", "--opts", "bob.opts", id); r.code == 0 {
		t.Fatalf("bob cancelled alice's job")
	}
	if r := runRecon(t, dir, "cancel", "--opts", "alice.opts", id); r.code != 0 {
		t.Fatalf("alice's cancel: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	keysFile := filepath.Join(dir, "clients.keys")
	writeFile(t, keysFile, "alice = "+ks["alice"]+"\n", 0o600)
	if r := admin(t, dir, "reload"); r.code != 0 {
		t.Fatalf("reload: exit %d\n%s", r.code, r.stderr)
	}
	writeFile(t, keysFile, "alice = not a key\n", 0o600)
	if r := admin(t, dir, "reload"); r.code == 0 {
		t.Fatalf("reload of a broken file succeeded")
	}

	var sawAuth, sawSubmit, sawBobCancel, sawAliceCancel, sawRemoved, sawBroken bool
	recs := auditRecords(t, dir)
	for _, rec := range recs {
		switch {
		case rec.Kind == "auth" && rec.Role == "client" && rec.Identity == "alice":
			sawAuth = true
		case rec.Kind == "submit":
			sawSubmit = rec.JobID == id && rec.Identity == "alice"
		case rec.Kind == "cancel" && rec.Identity == "bob":
			sawBobCancel = rec.JobID == id
		case rec.Kind == "cancel" && rec.Identity == "alice":
			sawAliceCancel = rec.JobID == id
		case rec.Kind == "keys_reload" && rec.Error == "":
			sawRemoved = len(rec.Removed) == 1 && rec.Removed[0] == "bob"
		case rec.Kind == "keys_reload" && rec.Error != "":
			sawBroken = len(rec.Removed) == 0
		}
	}
	if !sawAuth || !sawSubmit || !sawBobCancel || !sawAliceCancel || !sawRemoved || !sawBroken {
		t.Fatalf("alice auth %v, submit %v, bob's cancel %v, alice's cancel %v, reload removing bob %v, broken reload %v\n%+v",
			sawAuth, sawSubmit, sawBobCancel, sawAliceCancel, sawRemoved, sawBroken, recs)
	}
	out, err := os.ReadFile(filepath.Join(dir, "recon_audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range ks {
		if strings.Contains(string(out), k) {
			t.Errorf("the audit file holds %s's key", name)
		}
	}
	if r := admin(t, dir, "audit", "--verify"); r.code != 0 {
		t.Errorf("audit --verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
