package server_test

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// logRecord is one JSON record of the server log.
type logRecord map[string]any

// jobLogRecords returns the records of the server log at path with the
// message msg and the job id id.
func jobLogRecords(t *testing.T, path, id, msg string) []logRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r logRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r["msg"] == msg && r["job_id"] == id {
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
