package server

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
)

const (
	// maxLogRecord caps one record returned by admin logs; longer ones
	// (there should be none: script lines are capped) are cut.
	maxLogRecord = 16 << 10
	// tailChunk is how much of the log file is read at a time, backwards.
	tailChunk = 64 << 10
)

// tailLog returns the last n records of the JSON log file at path, oldest
// first; with jobID, only the records carrying that job_id. It reads the
// file backwards from its end, so it costs what it returns, not the size of
// the file (with a filter, what it must skip as well).
func tailLog(path string, n int, jobID string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	var (
		out     []string // newest first
		partial []byte   // the start of a line whose beginning is not read yet
		buf     = make([]byte, tailChunk)
		needle  = []byte(`"job_id":"` + jobID + `"`)
		skip    bool // dropping the rest of a runaway line
	)
	keep := func(line []byte) {
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		if jobID != "" {
			if !bytes.Contains(line, needle) {
				return
			}
			var rec struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal(line, &rec) != nil || rec.JobID != jobID {
				return
			}
		}
		if len(line) > maxLogRecord {
			line = append(line[:maxLogRecord:maxLogRecord], "…"...)
		}
		out = append(out, string(line))
	}
	for pos := end; pos > 0 && len(out) < n; {
		size := min(int64(tailChunk), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil && err != io.EOF {
			return nil, err
		}
		chunk := append(buf[:size:size], partial...)
		for len(out) < n {
			i := bytes.LastIndexByte(chunk, '\n')
			if i < 0 {
				break
			}
			if skip {
				skip = false
			} else {
				keep(chunk[i+1:])
			}
			chunk = chunk[:i]
		}
		partial = append(partial[:0:0], chunk...)
		if len(partial) > 4*maxLogRecord {
			// A runaway line, not a record: drop it.
			partial, skip = nil, true
		}
	}
	if len(out) < n && !skip {
		keep(partial)
	}
	// Oldest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
