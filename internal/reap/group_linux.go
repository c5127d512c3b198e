package reap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// groupParent is the directory, beside the caller's own cgroup, that holds
// the groups of runs.
const groupParent = "recon"

// Group is a cgroup (version 2) that holds every process of one run from
// its start (the script is cloned into it). Unlike the marker, membership
// cannot be dropped: not by setsid, a double fork or a new environment,
// only by a write to the cgroup files, which needs the privilege to manage
// cgroups. Groups need a writable cgroup2 hierarchy (root, or a delegated
// subtree); where there is none, NewGroup fails and the marker alone
// finds a run's processes.
type Group struct {
	dir string
	f   *os.File
}

// groupsDir returns the directory under which the caller creates groups:
// <cgroup2 mount>/<the caller's own cgroup>/recon.
func groupsDir() (string, error) {
	own, err := OwnCgroup()
	if err != nil {
		return "", err
	}
	return filepath.Join(own, groupParent), nil
}

// OwnCgroup returns the directory of the caller's own cgroup in the
// cgroup2 hierarchy.
func OwnCgroup() (string, error) {
	mount, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	own := ""
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			own = p
		}
	}
	if own == "" || !strings.HasPrefix(own, "/") {
		return "", errors.New("no cgroup2 membership")
	}
	return filepath.Join(mount, own), nil
}

// cgroup2Mount returns where the cgroup2 hierarchy is mounted.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "id parent major:minor root mountpoint opts ... - fstype source superopts"
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted")
}

// NewGroup creates the group named name (a run's marker) and opens it for
// runner use (FD).
func NewGroup(name string) (*Group, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("cgroup name %q is not valid", name)
	}
	parent, err := groupsDir()
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return &Group{dir: dir, f: f}, nil
}

// FD is the group's directory, for SysProcAttr.CgroupFD. It is valid
// until Kill.
func (g *Group) FD() int { return int(g.f.Fd()) }

// Kill kills every process in the group at once (cgroup.kill), waits until
// it is empty and removes it. It returns the processes it found in the
// group, read just before the kill. Safe to call more than once.
func (g *Group) Kill(ctx context.Context) ([]Process, error) {
	if g.f == nil {
		return nil, nil
	}
	g.f.Close()
	g.f = nil
	ctx, cancel := context.WithTimeout(ctx, KillTimeout)
	defer cancel()
	return killGroupDir(ctx, g.dir)
}

// KillGroups kills and removes, as Group.Kill does, every group of the
// caller's cgroup whose name m selects: those of runs of an earlier
// process, after a crash. Without a cgroup2 hierarchy it does nothing.
func KillGroups(ctx context.Context, m Match) ([]Process, error) {
	parent, err := groupsDir()
	if err != nil {
		return nil, nil
	}
	entries, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, KillTimeout)
	defer cancel()
	var killed []Process
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !m.matches(e.Name()) {
			continue
		}
		ps, err := killGroupDir(ctx, filepath.Join(parent, e.Name()))
		for i := range ps {
			ps[i].Marker = e.Name()
		}
		killed = append(killed, ps...)
		errs = append(errs, err)
	}
	return killed, errors.Join(errs...)
}

func killGroupDir(ctx context.Context, dir string) ([]Process, error) {
	var procs []Process
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				procs = append(procs, Process{PID: pid, Command: command("/proc/" + f)})
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		// Before Linux 5.14: one by one, in rounds (a process may fork
		// meanwhile; its child is in the group too).
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			return procs, fmt.Errorf("kill cgroup %s: %w", filepath.Base(dir), err)
		}
		signalAll(dir)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || bytes.Contains(b, []byte("populated 0")) {
			break
		}
		if ctx.Err() != nil {
			return procs, fmt.Errorf("%w: cgroup %s is not empty: %v", ErrSurvivors, filepath.Base(dir), context.Cause(ctx))
		}
		signalAll(dir)
		time.Sleep(pollInterval)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return procs, fmt.Errorf("remove cgroup: %w", err)
	}
	return procs, nil
}

// signalAll sends SIGKILL to every process of the group in dir.
func signalAll(dir string) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
