package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/servertest"
)

// TestPatientOptionsRedacted: identity options sent with a job reach the
// script, and nothing else shows them: submit's answer, status (JSON and
// text), the client's queue, the admin queue, the admin log tail and the
// server's log file say [redacted]; an option that is not patient data is
// shown as it was sent.
func TestPatientOptionsRedacted(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
set -eu
printf '%s|%s|%s\n' "$RECON_OPT_PATIENT_NAME" "$RECON_OPT_PATIENT_ID" "$RECON_OPTIONS_JSON" > "$3/identity.txt"
`)
	key := serverOpts(t, dir, script, "LOG_LEVEL = DEBUG")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	writeFile(t, filepath.Join(dir, "scan.7"), "raw", 0o644)

	secrets := []string{"Doe^Jane", "MRN-SECRET-77", "19710203", "1.2.999.4242", "ACC-SECRET-9", "Dr^Secret"}
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "--json",
		"--option", "patient_name=Doe^Jane", "--option", "patient_id=MRN-SECRET-77",
		"--option", "patient_birth_date=19710203", "--option", "study_instance_uid=1.2.999.4242",
		"--option", "accession_number=ACC-SECRET-9", "--option", "referring_physician=Dr^Secret",
		"--option", "method=fft-visible", "scan.7")
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out", "identity.txt"))
	if err != nil || !strings.HasPrefix(string(got), "Doe^Jane|MRN-SECRET-77|") || !strings.Contains(string(got), "ACC-SECRET-9") {
		t.Fatalf("the script did not get the identity: %q (%v)", got, err)
	}
	id := jobIDFromJSON(t, r.stdout)

	shown := map[string]string{"submit --json": r.stdout + r.stderr}
	for name, args := range map[string][]string{
		"status --json": {"status", "--opts", "client.opts", "--json", id},
		"status":        {"status", "--opts", "client.opts", id},
		"queue --json":  {"queue", "--opts", "client.opts", "--json"},
		"admin queue":   {"admin", "--opts", "admin.opts", "--json", "queue"},
		"admin logs":    {"admin", "--opts", "admin.opts", "logs", "--lines", "500"},
	} {
		r := runRecon(t, dir, args...)
		if r.code != 0 {
			t.Fatalf("recon %v: exit %d\n%s", args, r.code, r.stderr)
		}
		shown[name] = r.stdout + r.stderr
	}
	log, err := os.ReadFile(filepath.Join(dir, "recon.log"))
	if err != nil {
		t.Fatal(err)
	}
	shown["recon.log"] = string(log)
	for name, text := range shown {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q:\n%s", name, s, text)
			}
		}
	}
	for _, name := range []string{"submit --json", "status --json", "status", "queue --json", "admin queue"} {
		if !strings.Contains(shown[name], "[redacted]") || !strings.Contains(shown[name], "fft-visible") {
			t.Errorf("%s does not show the options as [redacted] beside the visible one:\n%s", name, shown[name])
		}
	}
}

// jobIDFromJSON returns the job_id field of a JSON job.
func jobIDFromJSON(t *testing.T, s string) string {
	t.Helper()
	i := strings.Index(s, `"job_id":`)
	if i < 0 {
		t.Fatalf("no job_id in %s", s)
	}
	rest := strings.TrimSpace(s[i+len(`"job_id":`):])
	rest = strings.TrimPrefix(rest, `"`)
	id, _, _ := strings.Cut(rest, `"`)
	return id
}
