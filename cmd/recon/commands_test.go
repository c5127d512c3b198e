package main

// The command tree as a user meets it: help, version, shell completion and
// the systemd units recon writes.

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

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

// TestCompletion: recon completion prints a script for each shell, and
// the completion recon answers lists its commands.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	for shell, marker := range map[string]string{"bash": "__start_recon", "zsh": "#compdef recon", "fish": "complete -c recon"} {
		r := runRecon(t, dir, "completion", shell)
		if r.code != 0 || len(r.stdout) < 200 || !strings.Contains(r.stdout, marker) || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("recon completion %s: exit %d, %d bytes, marker %q found: %v\n%s", shell, r.code, len(r.stdout), marker,
				strings.Contains(r.stdout, marker), r.stderr)
		}
	}
	// The scripts ask recon itself (recon __complete …) for the words.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", ""}, []string{"keygen", "server", "submit", "status", "queue", "fetch", "watch", "admin", "relay", "relay-admin", "completion"}},
		{[]string{"__complete", "admin", ""}, []string{"status", "queue", "workers", "logs", "cancel", "setmaxjobs"}},
		{[]string{"__complete", "relay-admin", ""}, []string{"status", "backends", "clients"}},
	} {
		r := runRecon(t, dir, c.args...)
		words := map[string]bool{}
		for _, l := range strings.Split(r.stdout, "\n") {
			w, _, _ := strings.Cut(l, "\t")
			words[w] = true
		}
		for _, w := range c.want {
			if !words[w] {
				t.Errorf("recon %s does not offer %q:\n%s", strings.Join(c.args, " "), w, r.stdout)
			}
		}
	}
}

// TestSystemdUnits: each unit under deploy/ starts recon with a command
// line recon accepts: a subcommand that exists and flags it knows.
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob(filepath.Join("..", "..", "deploy", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no unit files under deploy/: %v", err)
	}
	dir := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var execs []string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecStart="); ok {
				execs = append(execs, v)
			}
		}
		if len(execs) != 1 {
			t.Errorf("%s: %d ExecStart lines, want 1", u, len(execs))
			continue
		}
		argv := strings.Fields(strings.TrimLeft(execs[0], "-@:+!"))
		if len(argv) < 2 || filepath.Base(argv[0]) != "recon" || !filepath.IsAbs(argv[0]) {
			t.Errorf("%s: ExecStart=%s does not run an absolute path to recon with a subcommand", u, execs[0])
			continue
		}
		// --help makes recon check the subcommand and flags without
		// running it; the usage names the subcommand when it exists.
		r := runRecon(t, dir, append(argv[1:], "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:\n  recon "+argv[1]+" ") {
			t.Errorf("%s: recon %s --help: exit %d\n%s%s", u, strings.Join(argv[1:], " "), r.code, r.stdout, r.stderr)
		}
		// A flag recon does not know is refused the same way: the check
		// above would catch a unit with a misspelt flag.
		if r := runRecon(t, dir, append(argv[1:], "--no-such-flag", "--help")...); r.code == 0 {
			t.Errorf("%s: recon %s accepted an unknown flag", u, argv[1])
		}
	}
}
