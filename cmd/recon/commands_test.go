package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
	"github.com/recon-mri/recon/internal/statelock"
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

// closedByPeer reads from c until the peer closes it, or until bound. It
// returns the error that ended the read (EOF or a reset) and fails the test
// if the connection is still open at the bound or sent data.
func closedByPeer(t *testing.T, c net.Conn, bound time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound))
	n, err := c.Read(make([]byte, 512))
	switch {
	case n > 0:
		t.Errorf("%s: the server answered %d bytes", what, n)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("%s: still open after %s", what, bound)
	default:
		t.Errorf("%s: read error %v, want EOF or a reset", what, err)
	}
}

// TestGarbageAndIdlePeers opens raw TCP connections to a real `recon
// server`: some send garbage, some send nothing or stop half-way through
// the handshake, one authenticates and then sends nothing. The server
// closes each (the garbage at once, the others after
// HANDSHAKE_TIMEOUT_SECONDS or IDLE_TIMEOUT_SECONDS) while `recon status`
// is served.
func TestGarbageAndIdlePeers(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript),
		"HANDSHAKE_TIMEOUT_SECONDS = 2", "IDLE_TIMEOUT_SECONDS = 2")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	// bound is far above both timeouts: it only keeps a broken server from
	// hanging the test.
	const bound = 30 * time.Second

	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", srv.clientAddr, bound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	k, _ := keys.Parse(key)
	idleAuth, err := secure.Dial(t.Context(), srv.clientAddr, secure.Config{Key: k, Role: secure.RoleClient})
	if err != nil {
		t.Fatalf("authenticated connection: %v", err)
	}
	t.Cleanup(func() { idleAuth.Close() })

	idle := map[string]net.Conn{
		"silent":                     dial(),
		"half a preamble":            dial(),
		"preamble, no first message": dial(),
	}
	write := func(c net.Conn, b []byte) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write(idle["half a preamble"], []byte("REC"))
	write(idle["preamble, no first message"], []byte{'R', 'C', 'N', 0, secure.ProtocolVersion, byte(secure.RoleClient)})

	garbage := map[string][]byte{
		"HTTP request":    []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
		"TLS hello":       append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, make([]byte, 64)...),
		"random bytes":    pseudoRandom(4096),
		"zeros":           make([]byte, 1024),
		"SSH banner":      []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"oversize length": []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	gconns := map[string]net.Conn{}
	for name, b := range garbage {
		c := dial()
		write(c, b)
		gconns[name] = c
	}
	// Meanwhile a good client is served.
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 || !strings.Contains(r.stdout, "uptime") {
		t.Errorf("recon status next to garbage and idle peers: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for name, c := range gconns {
		closedByPeer(t, c, bound, "garbage ("+name+")")
	}
	for name, c := range idle {
		closedByPeer(t, c, bound, "idle peer ("+name+")")
	}
	idleAuth.SetReadDeadline(time.Now().Add(bound))
	if n, err := idleAuth.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("authenticated idle session: Read = %d, %v; want it closed by the server", n, err)
	}
	// And the server still serves.
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Errorf("recon status after the peers were dropped: exit %d\n%s", r.code, r.stderr)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	if !strings.Contains(string(log), "handshake failed") {
		t.Errorf("the server log does not record the failed handshakes")
	}
}

// pseudoRandom returns n pseudo-random bytes, the same each run.
func pseudoRandom(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestSIGINTStopsCleanly stops a real server with SIGINT, as Ctrl-C does:
// exit status 0, a "stopped" message, and the state directory's lock free.
func TestSIGINTStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Fatalf("recon status: exit %d\n%s", r.code, r.stderr)
	}
	if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.done:
		srv.done <- err
		if err != nil {
			t.Errorf("recon server after SIGINT: %v, want exit status 0\n%s", err, srv.stderr)
		}
	case <-time.After(shutdownTimeout + 10*time.Second):
		srv.cmd.Process.Kill()
		t.Fatalf("recon server did not stop after SIGINT\n%s", srv.stderr)
	}
	// The stderr pipe is read by another goroutine: wait for the last line.
	servertest.Eventually(t, 10*time.Second, "'stopped' message", func() bool {
		return strings.Contains(srv.stderr.String(), "recon server: stopped")
	})
	f, err := statelock.Acquire(filepath.Join(dir, "data", "state", "lock"))
	if err != nil {
		t.Fatalf("state lock after SIGINT: %v", err)
	}
	f.Close()
	// A new server starts on the same state.
	srv2 := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv2.clientAddr, key)
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Errorf("recon status after a restart: exit %d\n%s", r.code, r.stderr)
	}
}

// keyLikeRE matches a 32-byte key in base64 (either alphabet, padding
// optional).
var keyLikeRE = regexp.MustCompile(`[A-Za-z0-9_\-+/]{43}=?`)

// TestHelpTree walks every command of the command tree: each has a short
// description, each flag a usage text, and `recon CMD --help` shows neither
// a key from the config files in the working directory nor anything that
// looks like a key.
func TestHelpTree(t *testing.T) {
	dir := t.TempDir()
	var secrets []string
	for _, f := range []string{"recon.opts", "relay.opts"} {
		var lines []string
		for _, name := range []string{"SHARED_KEY", "SERVER_ADMIN_SHARED_KEY", "SHARED_KEY_RELAY_TO_CLIENTS", "RELAY_ADMIN_SHARED_KEY", "BACKEND_SHARED_KEY"} {
			k := keys.MustGenerate().Encode()
			secrets = append(secrets, k)
			lines = append(lines, name+" = "+k)
		}
		writeFile(t, filepath.Join(dir, f), strings.Join(lines, "\n")+"\n", 0o600)
	}

	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		c.InitDefaultHelpFlag()
		name := "recon " + strings.Join(path, " ")
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("%s has no short description", name)
		}
		check := func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s: flag --%s has no usage text", name, f.Name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			if !sub.Hidden {
				walk(sub, append(path[:len(path):len(path)], sub.Name()))
			}
		}
	}
	walk(root, nil)
	if len(paths) < 15 {
		t.Fatalf("walked only %d commands: %v", len(paths), paths)
	}
	for _, sub := range []string{"server", "submit", "status", "queue", "fetch", "watch", "admin", "relay", "relay-admin", "keygen", "version"} {
		if c, _, err := root.Find([]string{sub}); err != nil || c == root {
			t.Errorf("no command %q", sub)
		}
	}

	// Every help text through the binary, in a directory whose config
	// files hold keys.
	outputs := map[string]string{}
	for _, p := range paths {
		r := runRecon(t, dir, append(append([]string{}, p...), "--help")...)
		name := "recon " + strings.Join(append(append([]string{}, p...), "--help"), " ")
		if r.code != 0 || r.stdout == "" {
			t.Errorf("%s: exit %d, %d bytes\n%s", name, r.code, len(r.stdout), r.stderr)
		}
		outputs[name] = r.stdout + r.stderr
	}
	r := runRecon(t, dir, "help")
	outputs["recon help"] = r.stdout + r.stderr
	for name, out := range outputs {
		for _, k := range secrets {
			if strings.Contains(out, k) {
				t.Errorf("%s shows a key from the config file", name)
			}
		}
		if m := keyLikeRE.FindString(out); m != "" {
			if _, err := keys.Parse(m); err == nil {
				t.Errorf("%s shows something that parses as a key: %q", name, m)
			}
		}
	}
	if !strings.Contains(outputs["recon submit --help"], "--opts") {
		t.Errorf("recon submit --help does not explain --opts")
	}
}

// TestVersionStamp builds recon with -ldflags -X main.version, as `make
// build` does, and checks that `recon version` prints that version; and
// that the Makefile's build target stamps it.
func TestVersionStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary")
	}
	const stamp = "v9.8.7-stamp-test"
	bin := filepath.Join(t.TempDir(), "recon")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+stamp, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags -X: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "recon "+stamp {
		t.Errorf("recon version = %q, %v; want %q", out, err, "recon "+stamp)
	}

	make, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make")
	}
	// make -n prints the build command without running it.
	cmd := exec.CommandContext(ctx, make, "-n", "build", "VERSION=v1.2.3-make")
	cmd.Dir = filepath.Join("..", "..")
	mo, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, mo)
	}
	if !strings.Contains(string(mo), "-X main.version=v1.2.3-make") {
		t.Errorf("make build does not stamp the version with -ldflags -X main.version:\n%s", mo)
	}
}
