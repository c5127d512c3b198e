package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/config"
)

// TestServerIdentities: CLIENT_KEYS_FILE, relative to the config file,
// gives each identity its keys (two during a rotation) after SHARED_KEY's
// "default"; comments and blank lines are skipped.
func TestServerIdentities(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	keysFile := "# scanners\n\nscanner-3T = " + testKeyText(3) + "  # MR1\nsite_b.2 = " + testKeyText(4) + ", " + testKeyText(5) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "etc", "clients.keys"), []byte(keysFile), 0o600); err != nil {
		t.Fatal(err)
	}
	p := writeOpts(t, filepath.Join(dir, "etc"), "recon.opts", strings.Join([]string{
		"SHARED_KEY = " + testKeyText(1), "SERVER_ADMIN_SHARED_KEY = " + testKeyText(2),
		"CLIENT_KEYS_FILE = clients.keys", "RELAY_SHARED_KEY = " + testKeyText(6)}, "\n"))
	cfg, _, err := config.LoadServer(p)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := cfg.Identities()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range ids {
		got = append(got, id.Name)
	}
	if strings.Join(got, " ") != "default scanner-3T site_b.2" || len(ids[2].Keys) != 2 || !ids[2].Keys[1].Equal(testKey(t, 5)) || ids[1].Line != 3 {
		t.Errorf("identities %v (%+v)", got, ids)
	}

	// Without SHARED_KEY, the file alone; a third key is refused.
	p = writeOpts(t, filepath.Join(dir, "etc"), "recon.opts", strings.Join([]string{
		"SERVER_ADMIN_SHARED_KEY = " + testKeyText(2), "CLIENT_KEYS_FILE = clients.keys"}, "\n"))
	if cfg, _, err = config.LoadServer(p); err != nil {
		t.Fatalf("SHARED_KEY empty with CLIENT_KEYS_FILE: %v", err)
	}
	if ids, err := cfg.Identities(); err != nil || len(ids) != 2 {
		t.Errorf("identities without SHARED_KEY: %v, %v", ids, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "clients.keys"), []byte("a = "+testKeyText(3)+","+testKeyText(4)+","+testKeyText(5)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Identities(); err == nil || !strings.Contains(err.Error(), "clients.keys:1: a has 3 keys; at most 2") {
		t.Errorf("three keys: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "etc", "clients.keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Identities(); err == nil || !strings.Contains(err.Error(), "CLIENT_KEYS_FILE") {
		t.Errorf("missing file: %v", err)
	}
}
