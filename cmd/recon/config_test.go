package main

// How recon reports a config file it cannot use.

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/keys"
)

// TestDidYouMeanWhenLoadingFails checks that an unknown key's hint is shown
// also when the config cannot be loaded: a misspelt SHARED_KEY gives both
// "SHARED_KEY is required" and "did you mean SHARED_KEY?", for a client
// command and for the server.
func TestDidYouMeanWhenLoadingFails(t *testing.T) {
	key := keys.MustGenerate().Encode()
	admin := keys.MustGenerate().Encode()
	tests := []struct {
		name string
		args []string
		opts string
	}{
		{"status", []string{"status"}, "SERVER_HOSTNAME = 127.0.0.1\nSERVER_PORT = 1\nSHARED_KY = " + key + "\n"},
		{"submit", []string{"submit", "x.7"}, "SERVER_HOSTNAME = 127.0.0.1\nSERVER_PORT = 1\nSHARED_KY = " + key + "\n"},
		{"server", []string{"server"}, "SERVER_HOSTNAME = 127.0.0.1\nSERVER_PORT = 0\nSERVER_ADMIN_PORT = 0\nSHARED_KY = " + key +
			"\nSERVER_ADMIN_SHARED_KEY = " + admin + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "recon.opts"), tt.opts, 0o600)
			r := runRecon(t, dir, append(tt.args, "--opts", "recon.opts")...)
			if r.code == 0 {
				t.Fatalf("recon %s with SHARED_KY instead of SHARED_KEY succeeded", tt.name)
			}
			for _, want := range []string{
				"recon.opts:", "SHARED_KEY is required",
				"unknown key SHARED_KY (did you mean SHARED_KEY?)",
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			// The hint comes before the error it explains.
			if h, e := strings.Index(r.stderr, "did you mean"), strings.Index(r.stderr, "is required"); h > e {
				t.Errorf("the hint comes after the error:\n%s", r.stderr)
			}
			if strings.Contains(r.stderr, key) || strings.Contains(r.stderr, admin) {
				t.Error("stderr shows a key value")
			}
		})
	}
}

// TestMissingConfigFile checks what the client-side commands say when
// their config file does not exist: that it was not found, where they
// looked, and what to do.
func TestMissingConfigFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		file string   // the file looked for
		want []string // what the message must name
	}{
		{[]string{"status"}, "recon.opts", []string{"SERVER_HOSTNAME", "SERVER_PORT", "SHARED_KEY", "server's recon.opts"}},
		{[]string{"queue", "--json"}, "recon.opts", []string{"SHARED_KEY"}},
		{[]string{"fetch", "aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "recon.opts", []string{"SHARED_KEY"}},
		{[]string{"submit", "x.7"}, "recon.opts", []string{"SHARED_KEY"}},
		{[]string{"status", "--opts", "elsewhere/client.opts"}, filepath.Join("elsewhere", "client.opts"), []string{"SHARED_KEY"}},
		{[]string{"watch"}, "recon.opts", []string{"SHARED_KEY", "CLIENT_WATCH_DIRECTORY"}},
		{[]string{"admin", "status"}, "recon.opts", []string{"SERVER_ADMIN_SHARED_KEY", "server's recon.opts"}},
		{[]string{"relay-admin", "status"}, "relay.opts", []string{"RELAY_ADMIN_SHARED_KEY", "relay's relay.opts"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runRecon(t, dir, tt.args...)
			if r.code == 0 {
				t.Fatalf("exit 0 without a config file")
			}
			want := append([]string{
				"config file " + tt.file + " not found",
				"looked for " + filepath.Join(dir, tt.file),
				"--opts",
			}, tt.want...)
			for _, w := range want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "no such file or directory") {
				t.Errorf("stderr is the bare system error:\n%s", r.stderr)
			}
		})
	}
	// A client command never writes a config: that is the server's job.
	for _, f := range []string{"recon.opts", "relay.opts"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a client command created %s", f)
		}
	}
}
