package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/audit"
)

// TestRecordKeysReload: a key reload's record names the identities added,
// removed and changed, and says why a failed reload failed. (The reload itself is wired in
// with client identities.)
func TestRecordKeysReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(context.Background(), path, filepath.Join(dir, "audit.db"), nil, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &Server{auditLog: l}
	if err := s.recordKeysReload(context.Background(), []string{"scanner-2"}, []string{"scanner-1"}, []string{"site-b"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.recordKeysReload(context.Background(), nil, nil, nil, errors.New("clients.keys:3: key used by two identities")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d records, want start and two reloads:\n%s", len(lines), b)
	}
	for _, want := range []string{`"added":["scanner-2"]`, `"removed":["scanner-1"]`, `"changed":["site-b"]`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("reload record %s lacks %s", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], `"error":"clients.keys:3: key used by two identities"`) {
		t.Errorf("failed reload record %s lacks its error", lines[2])
	}
	if rep, err := l.Verify(context.Background()); err != nil || !rep.OK {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
