package runner

import (
	"runtime"
	"syscall"
	"unsafe"
)

// sysProcAttr puts the script in its own process group and has the kernel
// kill it if the server dies (Pdeathsig; the forking thread is kept alive by
// lockThread for as long as the script runs).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// lockThread wires the calling goroutine to its OS thread and returns the
// function that undoes it.
func lockThread() (unlock func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// leaderExited blocks until process pid has exited, without reaping it
// (waitid with WNOWAIT), and reports whether that worked. While the exited
// leader is a zombie, its pid cannot be reused, so signals to its process
// group cannot reach an unrelated group.
func leaderExited(pid int) bool {
	const (
		pPID    = 1          // P_PID
		wExited = 0x4        // WEXITED
		wNowait = 0x01000000 // WNOWAIT
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), wExited|wNowait, 0, 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		default:
			return false
		}
	}
}

// inCgroup has the script start in the cgroup open as fd (clone3 with
// CLONE_INTO_CGROUP): not even its first instruction runs outside it.
func inCgroup(attr *syscall.SysProcAttr, fd int) {
	attr.UseCgroupFD = true
	attr.CgroupFD = fd
}
