package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// logFile is the JSON log file of a server, relay or watch daemon. Reopen
// opens the path again, so that after an external rotation (logrotate
// renames the file, then sends SIGHUP) records go to a fresh file at
// LOG_FILEPATH instead of the renamed one. Write and Reopen are safe for
// concurrent use; each Write goes whole to one file.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen switches to a fresh open of the path. When that fails, writes go
// on to the file open before.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// daemonLog is the logger of a long-running command (server, relay, watch).
type daemonLog struct {
	*slog.Logger
	file *logFile // nil when logging to standard error
	name string   // where records go, for the start line
}

// openDaemonLog opens the log file at path, named by the config key key
// in errors (standard error when path is empty), and returns a JSON logger
// at level.
func openDaemonLog(key, path string, level slog.Level, stderr io.Writer) (*daemonLog, error) {
	d := &daemonLog{name: "standard error"}
	out := stderr
	if path != "" {
		f, err := openLogFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		d.file, d.name, out = f, path, f
	}
	d.Logger = slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))
	return d, nil
}

// Close closes the log file, if any.
func (d *daemonLog) Close() {
	if d.file != nil {
		d.file.Close()
	}
}

// reopen handles SIGHUP: the log file is opened again.
func (d *daemonLog) reopen(stderr io.Writer) {
	if d.file == nil {
		return // standard error: nothing to reopen
	}
	if err := d.file.Reopen(); err != nil {
		// The old file still takes the records; say so where an operator
		// looks.
		d.Error("SIGHUP: reopen log file failed; logging on to the file open before", "err", err)
		fmt.Fprintf(stderr, "recon: SIGHUP: reopen LOG_FILEPATH: %v\n", err)
		return
	}
	d.Info("log file reopened (SIGHUP)")
}

// notifyHangup delivers SIGHUP on the returned channel instead of letting it
// end the process, until stop is called.
func notifyHangup() (hup <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// waitStop blocks until ctx ends (it returns true: the command was asked to
// stop) or done is closed (false), reopening the log file at each SIGHUP
// and then calling onHup (if not nil).
func (d *daemonLog) waitStop(ctx context.Context, done <-chan struct{}, hup <-chan os.Signal, stderr io.Writer, onHup func()) bool {
	for {
		select {
		case <-ctx.Done():
			return true
		case <-done:
			return false
		case <-hup:
			d.reopen(stderr)
			if onHup != nil {
				onHup()
			}
		}
	}
}
