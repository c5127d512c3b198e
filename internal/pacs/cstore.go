package pacs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Limits of one C-STORE run.
const (
	// MaxCStoreInstances bounds the files of one storescu run (one
	// association, one argument list).
	MaxCStoreInstances = 200
	// cstoreTimeout bounds one storescu run, plus cstorePerFile per file.
	cstoreTimeout = 2 * time.Minute
	cstorePerFile = 10 * time.Second
	// maxStorescuLine bounds one line of storescu's log that is read.
	maxStorescuLine = 64 << 10
	// storescuNetTimeout is storescu's connection, ACSE and DIMSE timeout,
	// in seconds.
	storescuNetTimeout = "30"
)

// CStore stores instances with DIMSE C-STORE through dcmtk's storescu,
// run with an explicit argument list (no shell), reading its per-file
// DIMSE status from its debug log: its exit status says nothing (with
// --no-halt it exits 0 having stored nothing).
type CStore struct {
	host, port      string
	called, calling string
	storescu        string
}

// NewCStore returns a C-STORE client for the DICOM listener at addr
// (host:port), with the called and calling AE titles. It fails when
// storescu (Debian package dcmtk) is not installed.
func NewCStore(addr, called, calling string) (*CStore, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("PACS_DIMSE_ADDRESS %q must be host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("PACS_DIMSE_ADDRESS %q: bad port", addr)
	}
	if strings.HasPrefix(host, "-") {
		return nil, fmt.Errorf("PACS_DIMSE_ADDRESS %q: bad host", addr)
	}
	for _, ae := range []struct{ key, v string }{{"PACS_CALLED_AE", called}, {"PACS_CALLING_AE", calling}} {
		if err := validAE(ae.v); err != nil {
			return nil, fmt.Errorf("%s: %w", ae.key, err)
		}
	}
	bin, err := exec.LookPath("storescu")
	if err != nil {
		return nil, errors.New("PACS_DIMSE_ADDRESS is set but storescu is not installed (Debian package dcmtk)")
	}
	return &CStore{host: host, port: port, called: called, calling: calling, storescu: bin}, nil
}

// validAE checks an application entity title: 1 to 16 printable ASCII
// characters, not all spaces, no backslash.
func validAE(s string) error {
	if strings.TrimSpace(s) == "" || len(s) > 16 {
		return fmt.Errorf("AE title %q must have 1 to 16 characters", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e || s[i] == '\\' {
			return fmt.Errorf("AE title %q: only printable ASCII without '\\'", s)
		}
	}
	return nil
}

// Store sends the instances (at most MaxCStoreInstances, absolute paths)
// in one association and returns one Result per instance, in order; an
// instance the run did not reach is not Answered. stored is called as each
// instance's answer arrives, so that a crash loses no confirmation. A run
// that stored nothing because the association failed returns an error
// worth retrying.
func (c *CStore) Store(ctx context.Context, insts []Instance, answered func(i int, r Result)) ([]Result, error) {
	idx := make(map[string]int, len(insts))
	args := []string{"-d", "-nh", "-aet", c.calling, "-aec", c.called,
		"-to", storescuNetTimeout, "-ta", storescuNetTimeout, "-td", storescuNetTimeout,
		c.host, c.port}
	for i, in := range insts {
		if !filepath.IsAbs(in.Path) {
			return nil, fmt.Errorf("c-store: %q is not an absolute path", in.Path)
		}
		idx[in.Path] = i
		args = append(args, in.Path)
	}
	ctx, cancel := context.WithTimeout(ctx, cstoreTimeout+time.Duration(len(insts))*cstorePerFile)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.storescu, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TCP_NODELAY=1"}
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("c-store: start storescu: %w", err)
	}
	results := make([]Result, len(insts))
	cur := -1
	var lastErr string
	r := bufio.NewReaderSize(out, maxStorescuLine)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of an over-long line
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		s := strings.TrimRight(string(line), "\r\n")
		switch {
		case strings.HasPrefix(s, "I: Sending file: "):
			cur = -1
			if i, ok := idx[strings.TrimPrefix(s, "I: Sending file: ")]; ok {
				cur = i
			}
		case strings.HasPrefix(s, "D: DIMSE Status") && cur >= 0:
			res := parseStatus(s)
			results[cur] = res
			if answered != nil {
				answered(cur, res)
			}
			cur = -1
		case strings.HasPrefix(s, "E: ") || strings.HasPrefix(s, "F: "):
			lastErr = s[3:]
		}
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	n := 0
	for _, r := range results {
		if r.Answered {
			n++
		}
	}
	if n < len(insts) {
		msg := lastErr
		if msg == "" && werr != nil {
			msg = "storescu: " + werr.Error()
		}
		if msg == "" {
			msg = "storescu ended without an answer for every file"
		}
		if n == 0 {
			return results, retryf("c-store to %s: %s", net.JoinHostPort(c.host, c.port), msg)
		}
	}
	return results, nil
}

// parseStatus reads "D: DIMSE Status : 0xa700: Refused: Out of resources".
func parseStatus(line string) Result {
	_, rest, _ := strings.Cut(line, ":") // after "D"
	_, rest, _ = strings.Cut(rest, ":")  // after "DIMSE Status   "
	rest = strings.TrimSpace(rest)
	hex, text, _ := strings.Cut(rest, ":")
	text = strings.TrimSpace(text)
	code, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(hex), "0x"), 16, 16)
	if err != nil {
		return Result{Answered: true, Reason: "unreadable DIMSE status: " + rest}
	}
	desc := fmt.Sprintf("status 0x%04X", code)
	if text != "" {
		desc += " (" + text + ")"
	}
	switch {
	case code == 0:
		return Result{Stored: true, Answered: true}
	case code == 0x0001 || code&0xF000 == 0xB000:
		return Result{Stored: true, Answered: true, Warning: "stored with warning " + desc}
	}
	return Result{Answered: true, Reason: "the PACS refused it: " + desc}
}
