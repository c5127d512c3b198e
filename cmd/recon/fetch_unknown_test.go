package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestFetchUnknownJob checks that `recon fetch` of a job the server does
// not know exits non-zero with a message naming the id, and writes nothing.
func TestFetchUnknownJob(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	for _, id := range []string{
		"aaaaaaaaaaaaaaaaaaaaaaaaaa", // the form of a job id
		"UNKNOWN_ID",                 // not even that
	} {
		for _, extra := range [][]string{nil, {"--json"}} {
			args := append([]string{"fetch", "--opts", "client.opts", "--output", "out"}, extra...)
			r := runRecon(t, dir, append(args, id)...)
			if r.code == 0 || r.code == exitUsage {
				t.Errorf("recon fetch %v %s: exit %d, want a failure (not a usage error)", extra, id, r.code)
			}
			if want := `recon: no job "` + id + `"`; !strings.Contains(r.stderr, want) {
				t.Errorf("recon fetch %v %s: stderr %q, want it to say %q", extra, id, r.stderr, want)
			}
			if r.stdout != "" {
				t.Errorf("recon fetch %v %s printed on stdout: %q", extra, id, r.stdout)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("fetch of an unknown job created its output dir")
	}
	if _, err := os.Stat(filepath.Join(dir, "downloads")); err == nil {
		t.Error("fetch of an unknown job created the download dir")
	}
}
