// Package reap finds and kills every process of one run of a script,
// wherever it went.
//
// A process group or a recorded pid cannot follow a child that calls
// setsid, or a grandchild orphaned by a double fork, and after the server
// itself was killed nothing records them at all. The environment can: the
// runner gives the script a marker variable (Env, for example
// RECON_ATTEMPT=<server>.<job>.<attempt>) that every process it starts
// inherits, whatever session or group it moves to, and Find reads it back
// from /proc/PID/environ, as a batch system's epilogue finds a job's escaped
// processes. Only processes of the caller's own user are considered, and
// never the caller.
//
// Kill stops what it finds with SIGSTOP, so that nothing can fork away
// while it scans, then kills with SIGKILL, in rounds, until a scan finds no
// marked process. Each signal goes through a pidfd opened before the
// environment is checked, so a pid reused by an unrelated process is never
// signalled.
//
// The marker is inherited, not enforced: a process that replaces its whole
// environment (env -i, or execve with a new one) is no longer found. A
// Group is: a cgroup (version 2) the run starts in, which its processes
// cannot leave without the privilege to manage cgroups. Groups need a
// writable cgroup2 hierarchy (root, or a delegated subtree); the marker
// works without privileges. On systems without /proc (Supported is false)
// Find finds nothing, and without cgroup2 NewGroup fails.
package reap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Env is the name of the environment variable that marks the processes of
// a run.
const Env = "RECON_ATTEMPT"

// Limits of Kill.
const (
	// MaxCommandBytes caps Process.Command.
	MaxCommandBytes = 256
	// KillTimeout bounds Kill when its context has no earlier deadline:
	// a process stuck in the kernel (uninterruptible sleep) cannot be made
	// to die sooner.
	KillTimeout = 10 * time.Second
	// pollInterval is the pause between two scans while killed processes
	// finish dying.
	pollInterval = 5 * time.Millisecond
)

// ErrSurvivors is returned (wrapped) by Kill when marked processes are
// still alive at its deadline.
var ErrSurvivors = errors.New("marked processes survived")

// Process is a process found by Find.
type Process struct {
	PID int
	// Command is the process's command line (arguments joined by spaces,
	// at most MaxCommandBytes), or its name when the command line is empty.
	Command string
	// Marker is the value of Env in the process's environment.
	Marker string
}

// Match selects markers: one marker exactly, or every marker that begins
// with a prefix.
type Match struct {
	value  string
	prefix bool
}

// Exactly matches the marker m only.
func Exactly(m string) Match { return Match{value: m} }

// Prefix matches every marker that begins with p.
func Prefix(p string) Match { return Match{value: p, prefix: true} }

func (m Match) matches(marker string) bool {
	if m.prefix {
		return strings.HasPrefix(marker, m.value)
	}
	return marker == m.value
}

func (m Match) String() string {
	if m.prefix {
		return Env + "=" + m.value + "*"
	}
	return Env + "=" + m.value
}

// Find returns the processes of the caller's user, other than the caller,
// whose environment holds Env with a marker m selects.
func Find(m Match) ([]Process, error) { return find(m) }

// Kill kills every process Find(m) finds, and any it forks meanwhile, and
// returns them, each once, in the order found. It returns when a scan
// finds no marked process; when ctx ends or KillTimeout passes first, it
// returns what it killed and an error wrapping ErrSurvivors.
func Kill(ctx context.Context, m Match) ([]Process, error) {
	ctx, cancel := context.WithTimeout(ctx, KillTimeout)
	defer cancel()
	return kill(ctx, m)
}

// survivors is the error of a Kill that ran out of time.
func survivors(m Match, left []Process, cause error) error {
	pids := make([]string, 0, len(left))
	for _, p := range left {
		pids = append(pids, fmt.Sprint(p.PID))
	}
	return fmt.Errorf("%w: %s: pids %s still alive: %v", ErrSurvivors, m, strings.Join(pids, " "), cause)
}
