package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Report is the result of Verify.
type Report struct {
	OK       bool   `json:"ok"`
	Files    int    `json:"files"`
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	HeadSeq  uint64 `json:"head_seq"`
	// Note says what was not checked (records removed with old rotated
	// files).
	Note string `json:"note,omitempty"`
	// File (base name), Line (1-based) and Reason name the first bad line
	// when OK is false.
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// snapshot is the files of the log and its head at one moment: records
// appended later are not read.
type snapshot struct {
	head  head
	files []snapFile
}

type snapFile struct {
	name  string // base name
	f     *os.File
	size  int64
	first uint64 // from a rotated file's name; 0 for the current file
}

func (s *snapshot) close() {
	for _, f := range s.files {
		f.f.Close()
	}
}

// snap opens every file of the log under the lock.
func (l *Log) snap() (*snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil, ErrClosed
	}
	s := &snapshot{head: l.head}
	rot, err := rotated(l.path)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	for _, r := range rot {
		f, err := os.Open(r.path)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("audit log: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			s.close()
			return nil, fmt.Errorf("audit log: %w", err)
		}
		s.files = append(s.files, snapFile{name: filepath.Base(r.path), f: f, size: st.Size(), first: r.first})
	}
	f, err := os.Open(l.path)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	// The file as it is (the lock keeps appends out): someone else may
	// have changed its length.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		s.close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	s.files = append(s.files, snapFile{name: filepath.Base(l.path), f: f, size: st.Size()})
	return s, nil
}

// eachLine calls fn with each line of the first size bytes of r (without
// its newline), its 1-based number, and whether it ended with a newline. A
// line longer than MaxRecordBytes is passed cut to MaxRecordBytes+1 bytes
// (Parse refuses it).
func eachLine(ctx context.Context, r io.Reader, fn func(line []byte, n int, complete bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for n := 1; ; {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long) <= MaxRecordBytes {
				long = append(long, chunk[:min(len(chunk), MaxRecordBytes+1-len(long))]...)
			}
			continue
		case errors.Is(err, io.EOF):
			if len(chunk) == 0 && long == nil {
				return nil
			}
			return fn(append(long, chunk...), n, false)
		case err != nil:
			return err
		}
		line := chunk[:len(chunk)-1]
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if err := fn(line, n, true); err != nil {
			return err
		}
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		n++
	}
}

// errStop ends a walk early.
var errStop = errors.New("stop")

// Verify checks the whole chain, across the rotated files, against the
// head: each line must be a record, follow the seq of the one before and
// carry its hash, and the chain must end exactly at the head. The report
// names the first bad line.
func (l *Log) Verify(ctx context.Context) (*Report, error) {
	s, err := l.snap()
	if err != nil {
		return nil, err
	}
	defer s.close()
	return verify(ctx, s)
}

func verify(ctx context.Context, s *snapshot) (*Report, error) {
	rep := &Report{Files: len(s.files), HeadSeq: s.head.seq}
	type loc struct {
		file string
		line int
	}
	var (
		prevHash, prevPrevHash string
		prevSeq                uint64
		prevLoc, lastLoc       loc
		seen                   bool
	)
	bad := func(at loc, format string, args ...any) error {
		rep.File, rep.Line, rep.Reason = at.file, at.line, fmt.Sprintf(format, args...)
		return errStop
	}
	for _, f := range s.files {
		lastLoc = loc{f.name, 0}
		firstOfFile := true
		err := eachLine(ctx, io.NewSectionReader(f.f, 0, f.size), func(line []byte, n int, complete bool) error {
			here := loc{f.name, n}
			lastLoc = here
			if !complete {
				return bad(here, "incomplete line: the file was cut off")
			}
			r, err := Parse(line)
			if err != nil {
				return bad(here, "%v", err)
			}
			hash := LineHash(line)
			if firstOfFile && f.first != 0 && r.Seq != f.first {
				return bad(here, "rotated file named for seq %d begins with seq %d: its first lines were removed", f.first, r.Seq)
			}
			firstOfFile = false
			switch {
			case !seen && r.Seq == 1 && r.Prev != Genesis:
				return bad(here, "the first record does not begin the chain")
			case !seen && r.Seq > 1:
				rep.Note = fmt.Sprintf("records before seq %d are not present (rotated files removed); the chain is checked from seq %d", r.Seq, r.Seq)
			case !seen:
			case hash == prevHash:
				return bad(here, "this line repeats the line before it")
			case r.Prev != prevHash && r.Seq == prevSeq+1:
				return bad(prevLoc, "this line is not the record the next line chains to: it was changed")
			case r.Prev != prevHash && r.Seq == prevSeq && r.Prev == prevPrevHash:
				return bad(prevLoc, "this line was inserted: the next line repeats its seq and chains to the line before it")
			case r.Prev != prevHash && r.Seq > prevSeq+1:
				return bad(here, "records %d to %d are missing before this line", prevSeq+1, r.Seq-1)
			case r.Prev != prevHash:
				return bad(here, "seq %d does not follow seq %d, nor does it chain to the line before", r.Seq, prevSeq)
			case r.Seq != prevSeq+1:
				return bad(here, "seq %d does not follow seq %d", r.Seq, prevSeq)
			}
			switch {
			case r.Seq > s.head.seq:
				return bad(here, "seq %d is after the last record the server wrote (seq %d): it was not written by the server", r.Seq, s.head.seq)
			case r.Seq == s.head.seq && hash != s.head.hash:
				return bad(here, "this line is not the last record the server wrote (its hash differs from the audit head): the log was rewritten")
			}
			if !seen {
				rep.FirstSeq = r.Seq
			}
			seen = true
			rep.Records++
			rep.LastSeq = r.Seq
			prevPrevHash, prevHash, prevSeq, prevLoc = prevHash, hash, r.Seq, here
			return nil
		})
		if errors.Is(err, errStop) {
			return rep, nil
		}
		if err != nil {
			return nil, fmt.Errorf("audit log %s: %w", f.name, err)
		}
	}
	if prevSeq < s.head.seq {
		lastLoc.line++
		if prevSeq == 0 {
			bad(lastLoc, "the audit log holds no record, but the server wrote %d", s.head.seq)
		} else {
			bad(lastLoc, "the log ends at seq %d, but the server wrote up to seq %d: records were cut off", prevSeq, s.head.seq)
		}
		return rep, nil
	}
	rep.OK = true
	return rep, nil
}

// Filter selects records for Read. Zero fields select everything.
type Filter struct {
	Since    time.Time
	Identity string
	JobID    string
}

func (f Filter) match(r *Record) bool {
	return (f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.Identity == "" || r.Identity == f.Identity) &&
		(f.JobID == "" || r.JobID == f.JobID)
}

// Read calls fn with each record that f selects, oldest first, as its
// line (without the newline). Lines that are not records are skipped
// (Verify reports them).
func (l *Log) Read(ctx context.Context, f Filter, fn func(line []byte) error) error {
	s, err := l.snap()
	if err != nil {
		return err
	}
	defer s.close()
	for _, sf := range s.files {
		err := eachLine(ctx, io.NewSectionReader(sf.f, 0, sf.size), func(line []byte, _ int, complete bool) error {
			if !complete {
				return nil
			}
			r, err := Parse(line)
			if err != nil || !f.match(r) {
				return nil
			}
			return fn(line)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
