package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// verifyAudit asks the server, through its admin listener, to check its
// audit chain.
func verifyAudit(t *testing.T, ctx context.Context, s *servertest.Server) *protocol.AuditVerify {
	t.Helper()
	a, err := rpc.Dial(ctx, s.AdminAddr().String(), secure.Config{Key: mustKey(t, s.AdminKey), Role: secure.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var r protocol.AuditReply
	if err := a.Call(ctx, protocol.TypeAdminAudit, protocol.AuditRequest{Verify: true}, protocol.TypeAdminAuditReply, &r); err != nil {
		t.Fatalf("admin audit --verify: %v", err)
	}
	if r.Verify == nil {
		t.Fatal("no verification in the reply")
	}
	return r.Verify
}

type fileRecord struct {
	Kind     string    `json:"kind"`
	Peer     string    `json:"peer"`
	Role     string    `json:"role"`
	Failures int       `json:"failures"`
	Time     time.Time `json:"time"`
}

// auditFile reads the records of the audit file at path.
func auditFile(t *testing.T, path string) []fileRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []fileRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r fileRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// TestAuditRotation: the audit file rotates itself; the chain runs across
// the files and a restart, and an edit in a rotated file is named there.
func TestAuditRotation(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	opts := servertest.Options{Dir: dir, Server: server.Options{AuditRotateBytes: 2048}}
	s := servertest.Start(t, opts)
	for range 30 {
		checkServes(t, ctx, s) // one session, one auth record
	}
	v := verifyAudit(t, ctx, s)
	if !v.OK || v.Files < 3 || v.FirstSeq != 1 {
		t.Fatalf("verify = %+v, want intact over at least 3 files", v)
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "recon_audit.jsonl.*"))
	if len(rotated) != v.Files-1 {
		t.Fatalf("rotated files %v, verify counted %d files", rotated, v.Files)
	}
	mid := rotated[1]
	orig, err := os.ReadFile(mid)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.Clone(orig), []byte("\n"))
	lines[2] = bytes.Replace(lines[2], []byte(`"role":"client"`), []byte(`"role":"admin"`), 1)
	if err := os.WriteFile(mid, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := verifyAudit(t, ctx, s); v.OK || v.File != filepath.Base(mid) || v.Line != 3 {
		t.Fatalf("verify after an edit of %s line 3 = %+v", filepath.Base(mid), v)
	}
	if err := os.WriteFile(mid, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	// A whole rotated file taken away leaves a gap at the next one.
	if err := os.Rename(mid, mid+".aside"); err != nil {
		t.Fatal(err)
	}
	if v := verifyAudit(t, ctx, s); v.OK || v.File != filepath.Base(rotated[2]) || v.Line != 1 {
		t.Fatalf("verify without %s = %+v", filepath.Base(mid), v)
	}
	if err := os.Rename(mid+".aside", mid); err != nil {
		t.Fatal(err)
	}
	s.Stop(t)
	s = servertest.Start(t, opts)
	checkServes(t, ctx, s)
	if v := verifyAudit(t, ctx, s); !v.OK || v.FirstSeq != 1 {
		t.Fatalf("verify after a restart = %+v", v)
	}
}

// TestAuditFailedHandshakeFlood: a flood of handshakes with a wrong key
// writes no record each, only one summary per peer per interval.
func TestAuditFailedHandshakeFlood(t *testing.T) {
	ctx := testContext(t)
	const interval = 300 * time.Millisecond
	s := servertest.Start(t, servertest.Options{Server: server.Options{AuditInterval: interval}})
	path := filepath.Join(s.Dir, "recon_audit.jsonl")
	before := len(auditFile(t, path))
	wrong := keys.MustGenerate()
	const attempts = 200
	start := time.Now()
	for i := range attempts {
		role := secure.RoleClient
		addr := s.Addr().String()
		if i%2 == 1 {
			role, addr = secure.RoleAdmin, s.AdminAddr().String()
		}
		if c, err := rawDial(ctx, addr, "", wrong, role); err == nil {
			c.Close()
			t.Fatal("a wrong key was accepted")
		}
	}
	var recs []fileRecord
	total := func() int {
		recs = auditFile(t, path)
		n := 0
		for _, r := range recs[before:] {
			n += r.Failures
		}
		return n
	}
	servertest.Eventually(t, 30*time.Second, "every failed handshake summarised", func() bool { return total() >= attempts })
	elapsed := time.Since(start)
	if n := total(); n != attempts {
		t.Fatalf("%d failures summarised, want %d", n, attempts)
	}
	var summaries []fileRecord
	for _, r := range recs[before:] {
		if r.Kind != "auth_failures" || r.Peer != "127.0.0.1" {
			t.Fatalf("the flood wrote %+v", r)
		}
		summaries = append(summaries, r)
	}
	if max := int(elapsed/interval) + 2; len(summaries) > max {
		t.Fatalf("%d summaries in %v, want at most %d (one per interval of %v)", len(summaries), elapsed, max, interval)
	}
	for i := 1; i < len(summaries); i++ {
		if d := summaries[i].Time.Sub(summaries[i-1].Time); d < interval/2 {
			t.Fatalf("two summaries for one peer %v apart, within one interval of %v", d, interval)
		}
	}
	t.Logf("%d failed handshakes in %v: %d summary records", attempts, elapsed, len(summaries))
}

// TestAuditFullDiskRefuses: when the audit record cannot be written, the
// action is refused, not carried out unaudited, and nothing of the record
// is left to break the chain.
func TestAuditFullDiskRefuses(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "auditdisk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, disk, 256<<10)
	s := servertest.Start(t, servertest.Options{Dir: dir, Extra: map[string]string{"AUDIT_LOG_FILEPATH": "auditdisk/recon_audit.jsonl"}})
	c := s.Dial(t) // its session is audited before the disk fills
	fill := filepath.Join(disk, "fill")
	fillDisk(t, fill)
	// New sessions take what room is left in the file's last page; once
	// one cannot be recorded, it is closed unserved.
	servertest.Eventually(t, 30*time.Second, "a session refused for want of audit room", func() bool {
		rc, err := rawDial(ctx, s.Addr().String(), "", mustKey(t, s.Key), secure.RoleClient)
		if err != nil {
			return false
		}
		defer rc.Close()
		rc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = rawStatus(rc)
		return err != nil
	})
	in := writeInput(t, dir, "scan.7", []byte("raw data"))
	_, err := c.Submit(ctx, []string{in}, nil)
	if err == nil || !strings.Contains(err.Error(), "audit") {
		b, _ := os.ReadFile(s.LogPath)
		t.Logf("server log:\n%s", b)
		t.Fatalf("submit with a full audit disk: %v, want a refusal naming the audit trail", err)
	}
	if jobs := dirNames(t, s.Config.InputBaseDir); len(jobs) != 0 {
		t.Fatalf("input dirs %v after a refused submission", jobs)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	c2 := s.Dial(t)
	q, err := c2.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 0 {
		t.Fatalf("queue %+v after a refused submission", q)
	}
	if _, err := c2.Submit(ctx, []string{in}, nil); err != nil {
		t.Fatalf("submit once the disk has room: %v", err)
	}
	if v := verifyAudit(t, ctx, s); !v.OK {
		t.Fatalf("verify after the refusals = %+v", v)
	}
}
