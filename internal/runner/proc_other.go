//go:build unix && !linux

package runner

import "syscall"

// sysProcAttr puts the script in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func lockThread() (unlock func()) { return func() {} }

// leaderExited reports false: this platform has no portable way to wait
// for a child without reaping it.
func leaderExited(pid int) bool { return false }

// inCgroup does nothing: there are no cgroups here (reap.NewGroup fails).
func inCgroup(attr *syscall.SysProcAttr, fd int) {}
