//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package client_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestSessionHash runs a whole job against a real server with each hash a
// client may offer: BLAKE3 (the default) and SHA-256 only. Either way the
// results come back whole with their SHA-256 (checkable with sha256sum);
// an input checked with BLAKE3 has its BLAKE3 and no SHA-256 in the job's
// view; the audit trail names the digest each side verified.
func TestSessionHash(t *testing.T) {
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	s := servertest.Start(t, servertest.Options{Dir: dir, Extra: map[string]string{"AUDIT_LOG_FILEPATH": audit}})
	data := []byte(strings.Repeat("k-space ", 40_000))
	in := filepath.Join(t.TempDir(), "P00000.7")
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		offer  []string
		inSum  bool // the input's SHA-256 is in the job's view
		digest string
	}{
		{"default", nil, false, protocol.HashBLAKE3},
		{"sha256 only", []string{protocol.HashSHA256}, true, protocol.HashSHA256},
		{"unknown first", []string{"k12", protocol.HashSHA256}, true, protocol.HashSHA256},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := s.ClientConfig()
			cfg.Hashes = tt.offer
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: client.NewSubmissionID()})
			if err != nil {
				t.Fatal(err)
			}
			// The job's view shows the digest the server verified: its
			// SHA-256, or in a BLAKE3 session its BLAKE3 (and no SHA-256).
			f := job.Files[0]
			if tt.inSum && (f.SHA256 != hexSHA(data) || f.BLAKE3 != "") ||
				!tt.inSum && (f.SHA256 != "" || f.BLAKE3 != hexBLAKE3(data)) {
				t.Errorf("the input in the job's view: %+v", f)
			}
			if _, err := c.Wait(ctx, job.JobID, nil); err != nil {
				t.Fatal(err)
			}
			_, files, err := c.Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(files[0].Path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(data) || files[0].SHA256 != hexSHA(data) {
				t.Errorf("result: %d bytes, SHA-256 %s; want the input's %d bytes and %s", len(got), files[0].SHA256, len(data), hexSHA(data))
			}
			// The submit record names the digest the server verified, and
			// the confirmed fetch the one the client verified.
			for _, kind := range []string{"submit", "fetch_confirmed"} {
				f := auditFile(t, audit, kind, job.JobID)
				var d string
				switch tt.digest {
				case protocol.HashBLAKE3:
					d = f.BLAKE3
					if f.SHA256 != "" {
						t.Errorf("%s record carries a SHA-256 it did not verify: %+v", kind, f)
					}
				default:
					d = f.SHA256
				}
				if !protocol.ValidDigest(d) {
					t.Errorf("%s record: %+v, want its %s", kind, f, tt.digest)
				}
			}
		})
	}
}

func hexBLAKE3(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}

type auditedFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	BLAKE3 string `json:"blake3"`
}

// auditFile returns the first file of the audit record of kind for job.
func auditFile(t *testing.T, path, kind, job string) auditedFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			Kind  string        `json:"kind"`
			JobID string        `json:"job_id"`
			Files []auditedFile `json:"files"`
		}
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Kind == kind && r.JobID == job && len(r.Files) > 0 {
			return r.Files[0]
		}
	}
	t.Fatalf("no %s record with files for job %s in the audit trail", kind, job)
	return auditedFile{}
}
