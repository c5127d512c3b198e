package reap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Supported reports whether Find can see the processes of this system.
const Supported = true

func find(m Match) ([]Process, error) {
	d, err := os.Open("/proc")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no /proc mounted: nothing can be found
	} else if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self, uid := os.Getpid(), os.Geteuid()
	var found []Process
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		if p, ok := inspect(pid, uid, m); ok {
			found = append(found, p)
		}
	}
	return found, nil
}

// inspect reads process pid and reports whether it is one of user uid
// whose environment holds a marker m selects. Processes that are gone,
// zombies (their environment reads empty) and processes whose environment
// cannot be read are not.
func inspect(pid, uid int, m Match) (Process, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil || int(st.Uid) != uid {
		return Process{}, false
	}
	env, err := os.ReadFile(dir + "/environ")
	if err != nil {
		return Process{}, false
	}
	marker, ok := markerIn(env, m)
	if !ok {
		return Process{}, false
	}
	return Process{PID: pid, Command: command(dir), Marker: marker}, true
}

// markerIn returns the value of the first Env variable in env (a
// NUL-separated environment block) that m selects.
func markerIn(env []byte, m Match) (string, bool) {
	key := []byte(Env + "=")
	for len(env) > 0 {
		var kv []byte
		kv, env, _ = bytes.Cut(env, []byte{0})
		if v, ok := bytes.CutPrefix(kv, key); ok && m.matches(string(v)) {
			return string(v), true
		}
	}
	return "", false
}

// command returns the command line of the process in /proc dir, or its
// name when that is empty (a kernel thread, a zombie).
func command(dir string) string {
	b, _ := os.ReadFile(dir + "/cmdline")
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		b, _ = os.ReadFile(dir + "/comm")
		b = bytes.TrimSpace(b)
	}
	if len(b) > MaxCommandBytes {
		b = b[:MaxCommandBytes]
	}
	s := strings.ToValidUTF8(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), "?")
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// target is a process Kill holds: a pidfd on it (-1 where the kernel has
// none; then signals go by pid).
type target struct {
	Process
	fd int
}

// hold opens a pidfd on p and checks, through it, that the process is
// still the one found: the check reads /proc/PID again after the open, and
// a signal through the pidfd succeeds only while the opened process lives,
// so the first signal reaching it proves that the check read this process.
func hold(p Process, m Match) (*target, bool) {
	fd, err := unix.PidfdOpen(p.PID, 0)
	switch {
	case errors.Is(err, unix.ENOSYS):
		fd = -1
	case err != nil:
		return nil, false // gone
	}
	t := &target{Process: p, fd: fd}
	if q, ok := inspect(p.PID, os.Geteuid(), m); !ok || q.Marker != p.Marker {
		t.close()
		return nil, false
	}
	return t, true
}

func (t *target) signal(sig syscall.Signal) error {
	if t.fd < 0 {
		return syscall.Kill(t.PID, sig)
	}
	return unix.PidfdSendSignal(t.fd, sig, nil, 0)
}

func (t *target) close() {
	if t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
}

func kill(ctx context.Context, m Match) ([]Process, error) {
	held := map[int]*target{}
	defer func() {
		// Out of time, none is left stopped: kill what was stopped.
		for _, t := range held {
			t.signal(syscall.SIGKILL)
			t.close()
		}
	}()
	var killed []Process
	for {
		if err := ctx.Err(); err != nil {
			return killed, survivorsOf(m, context.Cause(ctx))
		}
		found, err := find(m)
		if err != nil {
			return killed, err
		}
		if len(found) == 0 {
			return killed, nil
		}
		// Stop each new process first: stopped, it cannot fork. A child
		// it forked before the stop shows up in the next scan.
		fresh := false
		for _, p := range found {
			if _, ok := held[p.PID]; ok {
				continue
			}
			t, ok := hold(p, m)
			if !ok {
				continue
			}
			if err := t.signal(syscall.SIGSTOP); err != nil {
				t.close() // it died meanwhile
				continue
			}
			held[p.PID] = t
			killed = append(killed, t.Process)
			fresh = true
		}
		if fresh {
			continue
		}
		// Every marked process alive is stopped: kill them all. One
		// already dead lets its pid go, which a marked child may take.
		for pid, t := range held {
			if err := t.signal(syscall.SIGKILL); errors.Is(err, syscall.ESRCH) {
				t.close()
				delete(held, pid)
			}
		}
		// Killed processes stay visible until they have exited.
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// survivorsOf is the error of a Kill that ran out of time: nil when a
// last scan finds no marked process after all.
func survivorsOf(m Match, cause error) error {
	left, err := find(m)
	switch {
	case err != nil:
		return err
	case len(left) == 0:
		return nil
	}
	return survivors(m, left, cause)
}
