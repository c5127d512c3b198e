package main

// recon submit against limits of the machine it runs on.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestSubmitMoreFilesThanOpenFiles submits 300 files with `recon submit`
// limited to 64 open files: the client opens each file only while it
// describes or sends it, so a job may have more files than a process may
// hold open.
func TestSubmitMoreFilesThanOpenFiles(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", "#!/bin/sh\nls \"$1\" | wc -l > \"$3/count\"\n"))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	in := filepath.Join(dir, "in")
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := range 300 {
		p := filepath.Join(in, fmt.Sprintf("f%03d.7", i))
		writeFile(t, p, fmt.Sprint(i), 0o600)
		args = append(args, p)
	}
	cmd := exec.Command("sh", append([]string{"-c", `ulimit -n 64 && exec "$0" "$@"`, reconBin, "submit", "--opts", "client.opts", "--output", "out"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recon submit of 300 files with 64 open files: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "count"))
	if err != nil || strings.TrimSpace(string(b)) != "300" {
		t.Errorf("the script saw %q files, want 300", b)
	}
}
