package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/recon-mri/recon/internal/config"
)

// What the client-side commands need from their config file, for the
// message when it does not exist.
const (
	needClient     = "SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY, copied from the server's recon.opts"
	needWatch      = "SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY, copied from the server's recon.opts, and CLIENT_WATCH_DIRECTORY"
	needAdmin      = "SERVER_ADMIN_HOSTNAME, SERVER_ADMIN_PORT and SERVER_ADMIN_SHARED_KEY, copied from the server's recon.opts"
	needRelayAdmin = "RELAY_ADMIN_HOSTNAME, RELAY_ADMIN_PORT and RELAY_ADMIN_SHARED_KEY, copied from the relay's relay.opts"
)

// loadConfig reads the config file at path with load and prints its
// warnings on standard error. The warnings come first, also when loading
// fails: an unknown key's hint ("unknown key SHARED_KY (did you mean
// SHARED_KEY?)") is what explains an error such as "SHARED_KEY is
// required".
//
// need says which keys the command reads, for the error when the file does
// not exist; it is "" for the programs that write a missing file themselves
// before loading it. skip, when not nil, drops a warning that the caller
// reports better itself; it gets a nil config when loading failed.
func loadConfig[T any](e *env, path string, load func(string) (*T, []config.Warning, error), need string, skip func(*T, config.Warning) bool) (*T, error) {
	cfg, warns, err := load(path)
	for _, w := range warns {
		if skip != nil && skip(cfg, w) {
			continue
		}
		fmt.Fprintf(e.stderr, "recon: warning: %s\n", w)
	}
	if err != nil && need != "" && errors.Is(err, fs.ErrNotExist) {
		return nil, &missingConfigError{path: path, need: need, err: err}
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// missingConfigError is the error for a config file that does not exist:
// it says where the file was looked for and how to provide it, and wraps
// the *fs.PathError (so errors.Is(err, fs.ErrNotExist) holds).
type missingConfigError struct {
	path, need string
	err        error
}

func (e *missingConfigError) Error() string {
	where := e.path
	if abs, err := filepath.Abs(e.path); err == nil {
		where = abs
	}
	return fmt.Sprintf("config file %s not found (looked for %s): pass --opts FILE to use another file, or create it with %s",
		e.path, where, e.need)
}

func (e *missingConfigError) Unwrap() error { return e.err }
