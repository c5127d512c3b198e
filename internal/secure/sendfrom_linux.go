package secure

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// readRecords fills slots in order from r and returns the number of bytes
// read: all of them unless r ended (io.EOF or io.ErrUnexpectedEOF) or
// failed. From an *os.File it uses readv, one system call for a batch.
func readRecords(r io.Reader, slots [][]byte) (int, error) {
	f, ok := r.(*os.File)
	if !ok {
		return readFullSlots(r, slots)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return readFullSlots(r, slots)
	}
	want := 0
	for _, s := range slots {
		want += len(s)
	}
	total := 0
	for total < want {
		// Skip what an earlier, short readv filled.
		rest, skip := slots, total
		for len(rest) > 0 && skip >= len(rest[0]) {
			skip -= len(rest[0])
			rest = rest[1:]
		}
		first := rest[0]
		rest[0] = first[skip:]
		var (
			m    int
			rerr error
		)
		cerr := rc.Read(func(fd uintptr) bool {
			m, rerr = unix.Readv(int(fd), rest)
			return rerr != unix.EAGAIN
		})
		rest[0] = first
		if rerr == nil {
			rerr = cerr
		}
		if m > 0 {
			total += m
		}
		if rerr == unix.EINTR {
			continue
		}
		if rerr != nil {
			return total, &os.PathError{Op: "readv", Path: f.Name(), Err: rerr}
		}
		if m == 0 {
			if total == 0 {
				return 0, io.EOF
			}
			return total, io.ErrUnexpectedEOF
		}
	}
	return total, nil
}
