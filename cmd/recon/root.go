package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// it comes from the module's build information.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		rev := ""
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
		switch {
		case v != "" && v != "(devel)":
			return v
		case rev != "":
			return "devel-" + rev
		}
	}
	return "devel"
}

// env is what a command reads and writes besides its arguments.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// isTerminal reports whether w is a terminal, for progress display.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "recon",
		Short: "Secure remote reconstruction for medical imaging",
		Long: `recon moves MRI raw data (GE P-files, BART .cfl/.hdr k-space, any files) to a
reconstruction server over an encrypted pre-shared-key channel, queues a job,
runs the site's reconstruction script on it and brings the images back.

Programs read their settings from an ITEM = VALUE file (--opts, default
recon.opts in the working directory). 'recon server' writes a fresh one with
new keys when it is missing.

Exit status: 0 success, 1 failure, 2 bad command line (an unknown command,
argument or flag), 3 the job ended without succeeding, 4 submit or fetch
downloaded nothing: the job succeeded but its results were downloaded
before or have expired.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetIn(e.stdin)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		newVersionCmd(e),
		newKeygenCmd(e),
		newServerCmd(e),
		newStatusCmd(e),
		newQueueCmd(e),
		newSubmitCmd(e),
		newFetchCmd(e),
		newCancelCmd(e),
		newWatchCmd(e),
		newAdminCmd(e),
		newRelayCmd(e),
		newRelayAdminCmd(e),
		newDicomCmd(e),
	)
	root.InitDefaultCompletionCmd()
	completeBashWithoutPackage(root)
	// A command that only groups others (admin, relay-admin, completion,
	// and recon itself) refuses an unknown command with the usage exit
	// code, instead of printing its help and exiting 0.
	var groups func(c *cobra.Command)
	groups = func(c *cobra.Command) {
		if c.HasSubCommands() && !c.Hidden {
			requireSubcommand(c)
		}
		for _, sub := range c.Commands() {
			groups(sub)
		}
	}
	groups(root)
	return root
}

// requireSubcommand makes a command that groups others fail with a
// usageError for an argument that names none of them, suggesting the
// nearest ones; without arguments, the root command prints its help and
// the others say which commands they take.
func requireSubcommand(c *cobra.Command) {
	c.Args = cobra.ArbitraryArgs
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2 // as cobra does for the root only
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		takes := strings.Join(names, ", ")
		if len(args) == 0 {
			if !cmd.HasParent() {
				return cmd.Help()
			}
			return &usageError{fmt.Errorf("%s needs a command: %s", cmd.CommandPath(), takes)}
		}
		msg := fmt.Sprintf("unknown command %q for %s", args[0], cmd.CommandPath())
		if near := cmd.SuggestionsFor(args[0]); len(near) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(near, " or "))
		}
		return &usageError{fmt.Errorf("%s; it takes: %s", msg, takes)}
	}
}

// argsRange accepts min to max positional arguments (max < 0: no upper
// bound), like cobra.RangeArgs, but fails with a usageError, so a wrong
// count exits with the usage exit code and says what the command takes.
func argsRange(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			switch {
			case max == 0:
				return &usageError{fmt.Errorf("%s takes no arguments", cmd.CommandPath())}
			case min == max:
				return &usageError{fmt.Errorf("%s takes %d argument(s), got %d", cmd.CommandPath(), min, len(args))}
			case max < 0:
				return &usageError{fmt.Errorf("%s needs at least %d argument(s)", cmd.CommandPath(), min)}
			}
			return &usageError{fmt.Errorf("%s takes %d to %d arguments, got %d", cmd.CommandPath(), min, max, len(args))}
		}
		return nil
	}
}

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print recon's version",
		Args:  argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(e.stdout, "recon %s\n", versionString())
			return err
		},
	}
}

func newKeygenCmd(e *env) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Print a fresh random key",
		Long: `Print a fresh key: 32 random bytes as url-safe base64 with padding (44
characters), the format of Python's Fernet.generate_key(). Use a separate key
for each role: SHARED_KEY, SERVER_ADMIN_SHARED_KEY, RELAY_SHARED_KEY,
SHARED_KEY_RELAY_TO_CLIENTS and RELAY_ADMIN_SHARED_KEY.

With --name NAME it prints NAME = KEY, a line for CLIENT_KEYS_FILE; the client
puts KEY in its SHARED_KEY.`,
		Args: argsRange(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("name") && !config.ValidIdentity(name) {
				return &usageError{fmt.Errorf("--name: an identity name is 1 to %d letters, digits, '-', '_' or '.'", config.MaxIdentityLen)}
			}
			k, err := keys.Generate()
			if err != nil {
				return err
			}
			if name != "" {
				_, err = fmt.Fprintf(e.stdout, "%s = %s\n", name, k.Encode())
				return err
			}
			_, err = fmt.Fprintln(e.stdout, k.Encode())
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "print `NAME` = KEY, a line for CLIENT_KEYS_FILE")
	return cmd
}
