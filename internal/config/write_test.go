package config_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
)

// Keys substituted for the placeholders in testdata/prototype-*.opts.
const (
	protoShared      = "vzx6hE510FwS7ZW4rlp2yOIjGMjJKcdNv1o5kJ5NXgA="
	protoServerAdmin = "zu8-XgmmaGYvb9I1ZfTJfvdwPkSlSqdY1m11sYMCuZE="
	protoRelayClient = "bzftRAi_4hbAHURYPPKaZj5aKjLTjtk32yN-saQgvLc="
	protoRelayAdmin  = "4Hypm4htL3wzJ7p8Q_buj_YfCLSHm2YKHYGjGO1LLiw="
)

// copyOpts copies a testdata file into a fresh directory, mode 0600.
func copyOpts(t *testing.T, src, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", src))
	if err != nil {
		t.Fatal(err)
	}
	return writeOpts(t, t.TempDir(), name, string(data))
}

// TestPrototypeFilesVerbatim checks that the testdata copies of the
// prototype's examples differ from them only by the keys. The
// placeholder files are the example blocks of the Python prototype's
// README, byte for byte; that README is not part of this repository, so
// they are the prototype's record here.
func TestPrototypeFilesVerbatim(t *testing.T) {
	tests := []struct {
		real, placeholders string
		subst              *strings.Replacer
	}{
		{"prototype-recon.opts", "prototype-recon-placeholders.opts", strings.NewReplacer(
			protoShared, "SET_YOUR_SHARED_KEY_HERE", protoServerAdmin, "SET_YOUR_SERVER_ADMIN_KEY_HERE")},
		{"prototype-relay.opts", "prototype-relay-placeholders.opts", strings.NewReplacer(
			protoRelayClient, "SET_YOUR_RELAY_TO_CLIENTS_KEY_HERE", protoRelayAdmin, "SET_YOUR_RELAY_ADMIN_KEY_HERE")},
	}
	for _, tt := range tests {
		real, err := os.ReadFile(filepath.Join("testdata", tt.real))
		if err != nil {
			t.Fatal(err)
		}
		ph, err := os.ReadFile(filepath.Join("testdata", tt.placeholders))
		if err != nil {
			t.Fatal(err)
		}
		if got := tt.subst.Replace(string(real)); got != string(ph) {
			t.Errorf("%s with placeholders back differs from %s:\n%s", tt.real, tt.placeholders, cmp.Diff(string(ph), got))
		}
	}
}

func TestPrototypeReconOpts(t *testing.T) {
	path := copyOpts(t, "prototype-recon.opts", "recon.opts")
	dir := filepath.Dir(path)
	shared, admin := mustKey(t, protoShared), mustKey(t, protoServerAdmin)

	srv, warns, err := config.LoadServer(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadServer(prototype recon.opts) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	want := defaultServer(t, path, shared, admin)
	want.InputBaseDir = "/tmp/recon_server_pfiles"
	want.OutputBaseDir = "/tmp/recon_server_job_outputs"
	want.LogFile = "/tmp/recon_project.log"
	want.ScriptPath = filepath.Join(dir, "default_recon_script.sh")
	want.StateDir = filepath.Join(dir, "recon_data", "state") // not in the file: durable state stays out of /tmp
	if diff := cmp.Diff(want, srv, cmpOpts); diff != "" {
		t.Errorf("LoadServer(prototype recon.opts) mismatch (-want +got):\n%s", diff)
	}

	cli, warns, err := config.LoadClient(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadClient(prototype recon.opts) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	wantCli := defaultClient(t, path, shared)
	wantCli.DefaultPfilePath = "/tmp/default_pfile_on_client/P00000.7"
	if diff := cmp.Diff(wantCli, cli, cmpOpts); diff != "" {
		t.Errorf("LoadClient(prototype recon.opts) mismatch (-want +got):\n%s", diff)
	}

	adm, warns, err := config.LoadAdmin(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadAdmin(prototype recon.opts) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultAdmin(path, admin), adm); diff != "" {
		t.Errorf("LoadAdmin(prototype recon.opts) mismatch (-want +got):\n%s", diff)
	}
}

func TestPrototypeRelayOpts(t *testing.T) {
	path := copyOpts(t, "prototype-relay.opts", "relay.opts")
	clients, admin := mustKey(t, protoRelayClient), mustKey(t, protoRelayAdmin)

	rel, warns, err := config.LoadRelay(path)
	if err != nil {
		t.Fatalf("LoadRelay(prototype relay.opts) error: %v", err)
	}
	// The prototype had no key toward the backends.
	if diff := cmp.Diff([]string{backendKeyWarning(path, 0)}, warningStrings(warns)); diff != "" {
		t.Errorf("LoadRelay(prototype relay.opts) warnings (-want +got):\n%s", diff)
	}
	want := defaultRelay(t, path, clients, admin)
	want.LogFile = "/tmp/relay_server.log"
	if diff := cmp.Diff(want, rel, cmpOpts); diff != "" {
		t.Errorf("LoadRelay(prototype relay.opts) mismatch (-want +got):\n%s", diff)
	}

	ra, warns, err := config.LoadRelayAdmin(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadRelayAdmin(prototype relay.opts) = %v, warnings %q", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultRelayAdmin(path, admin), ra); diff != "" {
		t.Errorf("LoadRelayAdmin(prototype relay.opts) mismatch (-want +got):\n%s", diff)
	}
}

func TestPrototypePlaceholders(t *testing.T) {
	const (
		shared = ":6: SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here"
		admin  = ":31: SERVER_ADMIN_SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here"
		rclien = ":11: SHARED_KEY_RELAY_TO_CLIENTS is still a placeholder: generate a key with recon keygen and put it here"
		radmin = ":20: RELAY_ADMIN_SHARED_KEY is still a placeholder: generate a key with recon keygen and put it here"
	)
	recon := copyOpts(t, "prototype-recon-placeholders.opts", "recon.opts")
	relay := copyOpts(t, "prototype-relay-placeholders.opts", "relay.opts")
	tests := []struct {
		name string
		load func() error
		want []string
	}{
		{"LoadServer", func() error { _, _, err := config.LoadServer(recon); return err }, []string{recon + shared, recon + admin}},
		{"LoadClient", func() error { _, _, err := config.LoadClient(recon); return err }, []string{recon + shared}},
		{"LoadAdmin", func() error { _, _, err := config.LoadAdmin(recon); return err }, []string{recon + admin}},
		{"LoadRelay", func() error { _, _, err := config.LoadRelay(relay); return err }, []string{relay + rclien, relay + radmin}},
		{"LoadRelayAdmin", func() error { _, _, err := config.LoadRelayAdmin(relay); return err }, []string{relay + radmin}},
	}
	for _, tt := range tests {
		err := tt.load()
		if want := strings.Join(tt.want, "\n"); err == nil || err.Error() != want {
			t.Errorf("%s(prototype with placeholders) error = %v, want %v", tt.name, err, want)
		}
		if !errors.Is(err, keys.ErrPlaceholder) {
			t.Errorf("%s(prototype with placeholders) error does not wrap keys.ErrPlaceholder", tt.name)
		}
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestDefaultServerFile(t *testing.T) {
	shared, admin := testKey(t, 1), testKey(t, 2)
	data := config.DefaultServerFile(shared, admin)
	checkGolden(t, "default-server.opts.golden", data)

	path := writeOpts(t, t.TempDir(), "recon.opts", string(data))
	srv, warns, err := config.LoadServer(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadServer(default file) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultServer(t, path, shared, admin), srv, cmpOpts); diff != "" {
		t.Errorf("LoadServer(default file) mismatch (-want +got):\n%s", diff)
	}
	cli, warns, err := config.LoadClient(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadClient(default file) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultClient(t, path, shared), cli, cmpOpts); diff != "" {
		t.Errorf("LoadClient(default file) mismatch (-want +got):\n%s", diff)
	}
	adm, warns, err := config.LoadAdmin(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadAdmin(default file) = %v, warnings %q; want no error or warnings", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultAdmin(path, admin), adm); diff != "" {
		t.Errorf("LoadAdmin(default file) mismatch (-want +got):\n%s", diff)
	}
	// Nothing durable in /tmp.
	if bytes.Contains(data, []byte("/tmp/")) {
		t.Errorf("default recon.opts mentions /tmp/")
	}
}

func TestDefaultRelayFile(t *testing.T) {
	clients, admin := testKey(t, 3), testKey(t, 4)
	data := config.DefaultRelayFile(clients, admin)
	checkGolden(t, "default-relay.opts.golden", data)

	path := writeOpts(t, t.TempDir(), "relay.opts", string(data))
	rel, warns, err := config.LoadRelay(path)
	if err != nil {
		t.Fatalf("LoadRelay(default file) error: %v", err)
	}
	// The one thing a fresh relay cannot know is its backends' key.
	line := 0
	for i, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "BACKEND_SHARED_KEY =") {
			line = i + 1
		}
	}
	if diff := cmp.Diff([]string{backendKeyWarning(path, line)}, warningStrings(warns)); diff != "" {
		t.Errorf("LoadRelay(default file) warnings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(defaultRelay(t, path, clients, admin), rel, cmpOpts); diff != "" {
		t.Errorf("LoadRelay(default file) mismatch (-want +got):\n%s", diff)
	}

	// With the backend key filled in, no warnings at all.
	filled := strings.Replace(string(data), "BACKEND_SHARED_KEY =", "BACKEND_SHARED_KEY = "+testKeyText(5), 1)
	path = writeOpts(t, t.TempDir(), "relay.opts", filled)
	if _, warns, err := config.LoadRelay(path); err != nil || len(warns) != 0 {
		t.Errorf("LoadRelay(default file with BACKEND_SHARED_KEY) = %v, warnings %q", err, warningStrings(warns))
	}
	ra, warns, err := config.LoadRelayAdmin(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadRelayAdmin(default file) = %v, warnings %q", err, warningStrings(warns))
	}
	if diff := cmp.Diff(defaultRelayAdmin(path, admin), ra); diff != "" {
		t.Errorf("LoadRelayAdmin(default file) mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteDefaultServer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "sub", "recon.opts")
	if err := config.WriteDefaultServer(path); err != nil {
		t.Fatalf("WriteDefaultServer: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %#o, want 0600", fi.Mode().Perm())
	}
	srv, warns, err := config.LoadServer(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("LoadServer(written file) = %v, warnings %q", err, warningStrings(warns))
	}
	if srv.SharedKey.IsZero() || srv.AdminSharedKey.IsZero() || srv.SharedKey.Equal(srv.AdminSharedKey) {
		t.Errorf("written keys are not two distinct keys")
	}
	want := defaultServer(t, path, srv.SharedKey, srv.AdminSharedKey)
	if diff := cmp.Diff(want, srv, cmpOpts); diff != "" {
		t.Errorf("LoadServer(written file) mismatch (-want +got):\n%s", diff)
	}
	// The client on the same machine just connects with the same file.
	cli, warns, err := config.LoadClient(path)
	if err != nil || len(warns) != 0 || !cli.SharedKey.Equal(srv.SharedKey) || cli.Addr() != srv.Addr() {
		t.Errorf("LoadClient(written file) = %v, warnings %q; want the server's key and address", err, warningStrings(warns))
	}

	// Never overwrite.
	before, _ := os.ReadFile(path)
	if err := config.WriteDefaultServer(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteDefaultServer(existing) error = %v, want one wrapping fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("WriteDefaultServer(existing) changed the file")
	}

	// Fresh keys each time.
	other := filepath.Join(dir, "other.opts")
	if err := config.WriteDefaultServer(other); err != nil {
		t.Fatal(err)
	}
	srv2, _, err := config.LoadServer(other)
	if err != nil {
		t.Fatal(err)
	}
	if srv2.SharedKey.Equal(srv.SharedKey) || srv2.AdminSharedKey.Equal(srv.AdminSharedKey) {
		t.Errorf("two WriteDefaultServer calls wrote the same keys")
	}
}

func TestWriteDefaultRelay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "relay.opts")
	if err := config.WriteDefaultRelay(path); err != nil {
		t.Fatalf("WriteDefaultRelay: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %#o, want 0600", fi.Mode().Perm())
	}
	rel, _, err := config.LoadRelay(path)
	if err != nil {
		t.Fatalf("LoadRelay(written file): %v", err)
	}
	if rel.ClientSharedKey.IsZero() || rel.AdminSharedKey.IsZero() || rel.ClientSharedKey.Equal(rel.AdminSharedKey) {
		t.Errorf("written keys are not two distinct keys")
	}
	if err := config.WriteDefaultRelay(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteDefaultRelay(existing) error = %v, want one wrapping fs.ErrExist", err)
	}
}

func TestWriteDefaultUnwritable(t *testing.T) {
	// A parent that is a file: nothing is written, the error says why.
	dir := t.TempDir()
	parent := writeOpts(t, dir, "file", "")
	if err := config.WriteDefaultServer(filepath.Join(parent, "recon.opts")); err == nil {
		t.Errorf("WriteDefaultServer under a file: no error")
	}
}

const (
	refStart = "<!-- config-reference:start -->\n"
	refEnd   = "<!-- config-reference:end -->"
)

// TestReadmeReference checks that README.md holds ReferenceMarkdown between
// its config-reference markers; -update rewrites that section only.
func TestReadmeReference(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	i := strings.Index(readme, refStart)
	j := strings.Index(readme, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q … %q section", path, strings.TrimSpace(refStart), refEnd)
	}
	got, want := readme[i+len(refStart):j], config.ReferenceMarkdown()
	if got == want {
		return
	}
	if *update {
		updated := readme[:i+len(refStart)] + want + readme[j:]
		if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md config reference differs from ReferenceMarkdown() (-README +generated; go test -update rewrites it):\n%s", cmp.Diff(got, want))
}

func TestReferenceMarkdown(t *testing.T) {
	ref := config.ReferenceMarkdown()
	// Every key of both prototype examples is documented.
	for _, name := range []string{"prototype-recon-placeholders.opts", "prototype-relay-placeholders.opts"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
			k, _, ok := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" || strings.ContainsAny(k, " -") {
				continue
			}
			if !strings.Contains(ref, "`"+k+"`") {
				t.Errorf("ReferenceMarkdown() does not document %s from %s", k, name)
			}
		}
	}
	if !strings.Contains(ref, "### recon.opts") || !strings.Contains(ref, "### relay.opts") {
		t.Errorf("ReferenceMarkdown() lacks a table heading")
	}
}
