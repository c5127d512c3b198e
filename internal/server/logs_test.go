package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/servertest"
)

// duplicateKeys returns the keys that occur more than once in one object
// of the JSON text rec, at any depth.
func duplicateKeys(rec []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(rec))
	var dups []string
	var value func() error
	value = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key := k.(string)
				if seen[key] {
					dups = append(dups, key)
				}
				seen[key] = true
				if err := value(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // '}'
			return err
		case json.Delim('['):
			for dec.More() {
				if err := value(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ']'
			return err
		}
		return nil
	}
	if err := value(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the record")
	}
	return dups, nil
}

func TestDuplicateKeys(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
	}{
		{`{"a":1,"b":2}`, ""},
		{`{"a":1,"a":2}`, "a"},
		{`{"a":{"b":1,"b":[{"c":1,"c":2}]},"d":[1,2]}`, "b,c"},
	} {
		got, err := duplicateKeys([]byte(tt.in))
		if err != nil || strings.Join(got, ",") != tt.want {
			t.Errorf("duplicateKeys(%s) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestLogRecordsNoDuplicateKeys runs a job whose script writes to stdout
// and stderr, then reads the server's JSON log file: no record carries a
// key twice (job_id in particular), and the script's lines are records with
// one job_id and their stream.
func TestLogRecordsNoDuplicateKeys(t *testing.T) {
	ctx := testContext(t)
	srv := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
set -eu
echo "to stdout"
echo "to stderr" >&2
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`})
	c := srv.Dial(t)
	j := submitOne(t, ctx, c, "P1.7", []byte("data"))
	if got := waitDone(t, ctx, c, j.JobID); got.State != "succeeded" {
		t.Fatalf("job %s: state %s, error %q", j.JobID, got.State, got.Error)
	}
	var lines [][]byte
	servertest.Eventually(t, pollTimeout, "job ended record in the log", func() bool {
		data, err := os.ReadFile(srv.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		lines = bytes.Split(bytes.TrimSpace(data), []byte("\n"))
		return bytes.Contains(data, []byte(`"msg":"job ended"`))
	})
	streams := map[string]string{}
	for _, line := range lines {
		dups, err := duplicateKeys(line)
		if err != nil {
			t.Fatalf("log record %s: %v", line, err)
		}
		if len(dups) > 0 {
			t.Errorf("log record carries %v more than once: %s", dups, line)
		}
		var rec struct {
			Msg    string `json:"msg"`
			JobID  string `json:"job_id"`
			Stream string `json:"stream"`
			Line   string `json:"line"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log record %s: %v", line, err)
		}
		if rec.Msg == "script output" {
			if rec.JobID != j.JobID {
				t.Errorf("script output record has job_id %q, want %s: %s", rec.JobID, j.JobID, line)
			}
			streams[rec.Stream] = rec.Line
		}
	}
	if want := map[string]string{"stdout": "to stdout", "stderr": "to stderr"}; fmt.Sprint(streams) != fmt.Sprint(want) {
		t.Errorf("script output records by stream: %v, want %v", streams, want)
	}
}
