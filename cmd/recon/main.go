// Command recon is the secure remote reconstruction server for medical
// imaging and its clients: one binary with a subcommand per role: server;
// the client commands submit, status, queue and fetch; admin, for the
// server's administrators; watch, the directory-watching client daemon;
// relay and relay-admin, for a relay in front of several servers; dicom,
// which reconstruction scripts call to write DICOM images; and keygen,
// completion and version.
//
// Each subcommand is a cobra command built by a new<Name>Cmd function
// (cmd_*.go; keygen and version in root.go, completion is cobra's own,
// its bash script made to work without bash-completion) and registered in
// root.go. A client or admin command keeps its flags in an options struct
// and does its work in a run<Name>(ctx, opts, …, env) function, which the
// golden tests call in-process; its result goes through one printer, text
// or JSON (output.go). main turns SIGINT and SIGTERM into the cancellation
// of the root context; run maps errors to exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"modernc.org/sqlite"
)

// Exit codes.
const (
	exitOK        = 0
	exitFailure   = 1 // any failure
	exitUsage     = 2 // bad command line
	exitJobFailed = 3 // the job ended but did not succeed
	// exitNothingFetched: submit or fetch found the job succeeded but
	// wrote nothing, its results having been downloaded before or expired.
	exitNothingFetched = 4
)

func main() {
	// SQLite commits with fdatasync(2), as SQLite's own Linux builds do:
	// as durable as fsync(2), without flushing timestamps.
	sqlite.Fdatasync(true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(&env{stdin: stdin, stdout: stdout, stderr: stderr})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *codeError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "recon: %v\n", ee.err)
		}
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "recon: %v\nRun 'recon --help' for usage.\n", ue.err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "recon: %v\n", err)
	return exitFailure
}

// codeError carries a specific exit code; err may be nil when the command
// already said everything.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *codeError) Unwrap() error { return e.err }

type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
