package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/recon-mri/recon/internal/runner"
)

const (
	// maxLogRecord caps one record returned by admin logs. The longest
	// record the server writes is a line of script output: at most
	// runner.MaxLineBytes of text, each byte at most 6 once JSON-escaped
	// (\u00XX), plus a few short fields; an error message with a script's
	// stderr tail is shorter still. The cap leaves ample room, so every
	// record is returned as stored. A longer line is not a record the server
	// wrote: it is returned cut, marked with "…".
	maxLogRecord = 256 << 10
	// maxLogLine is the longest line kept in memory while reading
	// backwards; a longer one is dropped.
	maxLogLine = 4 * maxLogRecord
	// tailChunk is how much of the log file is read at a time, backwards.
	tailChunk = 64 << 10
	// maxRotatedLogs is how many rotated log files (LOG_FILEPATH.1, .2, …)
	// admin logs reads beyond the current one.
	maxRotatedLogs = 9
)

// maxLogRecord holds the longest script output record, with room to spare.
const _ = uint(maxLogRecord - 2*(6*runner.MaxLineBytes+4<<10))

// tailLog returns the last n records of the JSON log file at path, oldest
// first; with jobID, only the records carrying that job_id. When path has
// fewer, it goes on into the files an external rotation (logrotate, rename
// style) left beside it: path.1, then path.2 … up to maxRotatedLogs,
// stopping at the first that is missing or not a regular file (compressed
// ones, path.N.gz, are not read). path itself may be missing right after a
// rotation, until the server reopens its log. Each file is read backwards
// from its end, so tailLog costs what it returns, not the size of the logs
// (with a filter, what it must skip as well).
func tailLog(path string, n int, jobID string) ([]string, error) {
	t := &logTail{n: n, jobID: jobID, needle: []byte(`"job_id":"` + jobID + `"`), buf: make([]byte, tailChunk)}
	var (
		read     []os.FileInfo // files read, so a rotation meanwhile does not repeat one
		firstErr error
	)
	for i := 0; i <= maxRotatedLogs && len(t.out) < n; i++ {
		p := path
		if i > 0 {
			p = fmt.Sprintf("%s.%d", path, i)
		}
		fi, err := t.file(p, read)
		if i == 0 && err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			firstErr = err
			continue
		}
		if err != nil {
			// Missing or not a plain file: the end of the rotated logs.
			break
		}
		read = append(read, fi)
	}
	if len(read) == 0 && firstErr != nil {
		return nil, firstErr
	}
	// Oldest first.
	out := t.out
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// logTail collects the records of tailLog, newest first.
type logTail struct {
	n      int
	jobID  string
	needle []byte // `"job_id":"<jobID>"`
	buf    []byte
	out    []string
}

// errNotLogFile is the error for a log path that is not a regular file.
var errNotLogFile = errors.New("not a regular file")

// file adds the records of the file at path, read backwards, until t has
// n. Files in read (already read) are skipped.
func (t *logTail) file(path string, read []os.FileInfo) (os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", path, errNotLogFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	for _, r := range read {
		if os.SameFile(fi, r) {
			return fi, nil
		}
	}
	var (
		partial []byte // the start of a line whose beginning is not read yet
		skip    bool   // dropping the rest of a runaway line
	)
	for pos := fi.Size(); pos > 0 && len(t.out) < t.n; {
		size := min(int64(tailChunk), pos)
		pos -= size
		if _, err := f.ReadAt(t.buf[:size], pos); err != nil && err != io.EOF {
			return nil, err
		}
		chunk := append(t.buf[:size:size], partial...)
		for len(t.out) < t.n {
			i := bytes.LastIndexByte(chunk, '\n')
			if i < 0 {
				break
			}
			if skip {
				skip = false
			} else {
				t.keep(chunk[i+1:])
			}
			chunk = chunk[:i]
		}
		partial = append(partial[:0:0], chunk...)
		if len(partial) > maxLogLine {
			// A runaway line, not a record: drop it.
			partial, skip = nil, true
		}
	}
	if len(t.out) < t.n && !skip {
		t.keep(partial) // the file's first line
	}
	return fi, nil
}

// keep adds line if it is a record tailLog returns.
func (t *logTail) keep(line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if t.jobID != "" {
		if !bytes.Contains(line, t.needle) {
			return
		}
		var rec struct {
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.JobID != t.jobID {
			return
		}
	}
	if len(line) > maxLogRecord {
		line = append(line[:maxLogRecord:maxLogRecord], "…"...)
	}
	t.out = append(t.out, string(line))
}
