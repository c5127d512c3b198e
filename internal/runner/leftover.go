package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/recon-mri/recon/internal/reap"
)

// ErrSurvivors is returned (wrapped) by Run and KillStale when processes
// of a run outlived every attempt to kill them.
var ErrSurvivors = reap.ErrSurvivors

// Marker returns the marker of a run: attempt number attempt of job jobID
// on server instance. Every process of the run carries it in its
// environment as RECON_ATTEMPT.
func Marker(instance, jobID string, attempt int) string {
	return instance + "." + jobID + "." + strconv.Itoa(attempt)
}

// marker returns the run's marker: Marker of its instance, job and
// attempt, or a random one when s has no Instance.
func (s Spec) marker() string {
	if s.Instance == "" {
		return "run-" + rand.Text()
	}
	return Marker(s.Instance, s.JobID, s.Attempt)
}

// killLeftovers kills every process of the run that is still alive once
// the script's leader has exited, and logs each: those that carry marker,
// then any left in the run's cgroup grp (nil when it has none), which
// dropped the marker. ctx only carries values: the processes are killed
// whether or not it was cancelled (reap has its own deadline).
func killLeftovers(ctx context.Context, log *slog.Logger, marker string, grp *reap.Group) error {
	ctx = context.WithoutCancel(ctx)
	killed, err := reap.Kill(ctx, reap.Exactly(marker))
	if grp != nil {
		more, gerr := grp.Kill(ctx)
		for _, p := range more {
			// One killed by its marker may still be leaving the group.
			if !slices.ContainsFunc(killed, func(k reap.Process) bool { return k.PID == p.PID }) {
				killed = append(killed, p)
			}
		}
		err = errors.Join(err, gerr)
	}
	for _, p := range killed {
		log.Warn("killed a process the script left running", "pid", p.PID, "command", p.Command)
	}
	if err != nil {
		log.Error("processes the script left could not be killed", "err", err)
		if !errors.Is(err, ErrSurvivors) {
			// Not knowing whether any survived is no better.
			err = fmt.Errorf("%w: %w", ErrSurvivors, err)
		}
		return fmt.Errorf("kill what the script left: %w", err)
	}
	return nil
}

// KillStale kills every process of runs of server instance that are still
// alive: after a crash of the server, the processes its scripts left (a
// script's own process dies with the server; what it started need not).
// Call it before the jobs of those runs run again. Each process killed is
// logged at Warn with its job_id, attempt, pid and command. It fails,
// wrapping ErrSurvivors, when some outlive every attempt to kill them.
func KillStale(ctx context.Context, instance string, log *slog.Logger) error {
	if instance == "" || strings.ContainsAny(instance, ".\x00") {
		return fmt.Errorf("kill stale runs: instance %q is empty or contains '.' or a NUL byte", instance)
	}
	m := reap.Prefix(instance + ".")
	killed, err := reap.Kill(ctx, m)
	more, gerr := reap.KillGroups(ctx, m)
	for _, p := range more {
		if !slices.ContainsFunc(killed, func(k reap.Process) bool { return k.PID == p.PID }) {
			killed = append(killed, p)
		}
	}
	err = errors.Join(err, gerr)
	for _, p := range killed {
		rest := strings.TrimPrefix(p.Marker, instance+".")
		job, attempt := rest, ""
		if i := strings.LastIndexByte(rest, '.'); i >= 0 {
			job, attempt = rest[:i], rest[i+1:]
		}
		log.Warn("killed a process left by an earlier run of the job", "job_id", job, "attempt", attempt,
			"pid", p.PID, "command", p.Command)
	}
	if err != nil {
		return fmt.Errorf("kill processes of earlier runs: %w", err)
	}
	return nil
}
