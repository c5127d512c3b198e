package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// scriptHeadSize is how much of RECON_SCRIPT_PATH checkScript reads: the
// interpreter line, whose length the kernel caps at 256 bytes on Linux.
const scriptHeadSize = 256

// binaryMagics are the first bytes of the programs the kernel runs
// without an interpreter line: ELF (Linux, BSD) and Mach-O (macOS, both
// byte orders, 32 and 64 bit, and universal binaries).
var binaryMagics = [][]byte{
	{0x7f, 'E', 'L', 'F'},
	{0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf},
	{0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe},
	{0xca, 0xfe, 0xba, 0xbe},
}

// checkScript says, at server start, what would keep RECON_SCRIPT_PATH
// from running: it must exist, be a regular executable file, and be either
// a script whose first line names its interpreter (#!/bin/sh), which must
// exist, or a binary program. The server runs it directly, without a
// shell, so a script without an interpreter line fails with "exec format
// error" at every job.
func checkScript(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("RECON_SCRIPT_PATH: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("RECON_SCRIPT_PATH %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("RECON_SCRIPT_PATH %s is not executable (chmod +x it)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("RECON_SCRIPT_PATH: %w", err)
	}
	defer f.Close()
	head := make([]byte, scriptHeadSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("RECON_SCRIPT_PATH: %w", err)
	}
	head = head[:n]
	for _, m := range binaryMagics {
		if bytes.HasPrefix(head, m) {
			return nil
		}
	}
	const howTo = "the server runs it directly, without a shell: make its first line name its interpreter, such as #!/bin/sh"
	if !bytes.HasPrefix(head, []byte("#!")) {
		if n == 0 {
			return fmt.Errorf("RECON_SCRIPT_PATH %s is empty; %s", path, howTo)
		}
		return fmt.Errorf("RECON_SCRIPT_PATH %s has no interpreter line (#!) and is not a binary program; %s", path, howTo)
	}
	line, _, _ := bytes.Cut(head[2:], []byte("\n"))
	fields := strings.Fields(strings.TrimSuffix(string(line), "\r"))
	if len(fields) == 0 {
		return fmt.Errorf("RECON_SCRIPT_PATH %s: its interpreter line (#!) names no interpreter; %s", path, howTo)
	}
	interp := fields[0]
	ifi, err := os.Stat(interp)
	switch {
	case err != nil:
		return fmt.Errorf("RECON_SCRIPT_PATH %s: its interpreter %s (from its #! line): %w", path, interp, err)
	case !ifi.Mode().IsRegular() || ifi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("RECON_SCRIPT_PATH %s: its interpreter %s (from its #! line) is not an executable file", path, interp)
	}
	if strings.HasSuffix(string(line), "\r") {
		return fmt.Errorf("RECON_SCRIPT_PATH %s: its #! line ends in a carriage return (Windows line ends), which the kernel takes as part of the interpreter's name; convert it with dos2unix", path)
	}
	return nil
}

// startFailure is the job error for a script that could not start, without
// server paths: what the log says in full, in a few words.
func startFailure(err error) string {
	if errors.Is(err, syscall.ENOEXEC) {
		return "the server could not start the reconstruction script: it is not a program the system can run (no #! interpreter line?); see the server log"
	}
	return "the server could not start the reconstruction script; see the server log"
}
