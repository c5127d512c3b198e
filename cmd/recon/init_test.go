package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/config"
)

// TestServerInit: recon server --init writes the config with fresh keys
// and the default script, says what to edit next and exits without
// listening; a second --init refuses to overwrite, and leaves the file as
// it was.
func TestServerInit(t *testing.T) {
	dir := t.TempDir()
	r := runRecon(t, dir, "server", "--init", "--opts", "site/recon.opts")
	if r.code != 0 {
		t.Fatalf("recon server --init: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, w := range []string{"Wrote a new server config with fresh keys", "Next, edit it:", "SERVER_HOSTNAME", "TRUSTED_IPS", "RECON_SCRIPT_PATH", "recon server --opts site/recon.opts"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("recon server --init says:\n%s\nwant %q", r.stdout, w)
		}
	}
	if strings.Contains(r.stderr, "clients on") {
		t.Errorf("recon server --init started the server:\n%s", r.stderr)
	}
	opts := filepath.Join(dir, "site", "recon.opts")
	cfg, _, err := config.LoadServer(opts)
	if err != nil {
		t.Fatalf("the written config does not load: %v", err)
	}
	if cfg.SharedKey.IsZero() || cfg.AdminSharedKey.IsZero() || cfg.SharedKey.Equal(cfg.AdminSharedKey) {
		t.Errorf("keys not fresh and distinct")
	}
	if fi, err := os.Stat(filepath.Join(dir, "site", defaultScriptName)); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("default script: %v, %v", fi, err)
	}
	before, _ := os.ReadFile(opts)
	r = runRecon(t, dir, "server", "--init", "--opts", "site/recon.opts")
	if r.code == 0 || !strings.Contains(r.stderr, "already exists; it is left as it is") {
		t.Errorf("second recon server --init: exit %d\n%s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(opts); string(after) != string(before) {
		t.Errorf("second --init changed the config")
	}
}

// TestRelayInit: recon relay --init writes the relay's config with fresh
// keys, names BACKEND_SERVERS and BACKEND_SHARED_KEY as what to set, and
// exits; it does not overwrite.
func TestRelayInit(t *testing.T) {
	dir := t.TempDir()
	r := runRecon(t, dir, "relay", "--init")
	if r.code != 0 {
		t.Fatalf("recon relay --init: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, w := range []string{"Wrote a new relay config with fresh keys", "BACKEND_SERVERS", "BACKEND_SHARED_KEY", "recon relay --opts relay.opts"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("recon relay --init says:\n%s\nwant %q", r.stdout, w)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "relay.opts"))
	if err != nil || !strings.Contains(string(b), "SHARED_KEY_RELAY_TO_CLIENTS") {
		t.Fatalf("relay.opts: %v\n%s", err, b)
	}
	r = runRecon(t, dir, "relay", "--init")
	if r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("second recon relay --init: exit %d\n%s", r.code, r.stderr)
	}
}
