package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/wire.golden")

// TestWireGolden pins the bytes of the messages that carry job, worker and
// upload states, file lists and option maps: a change of their Go types
// must not change what travels. Run with -update to rewrite the golden
// file after a deliberate change of the wire, and review the diff.
func TestWireGolden(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC)
	later := at.Add(90 * time.Second)
	exit := 0
	files := []FileSum{{Name: "P00000.7", Size: 12, SHA256: zeroHash}}
	results := []FileSum{{Name: "images/slice_001.dcm", Size: 3, SHA256: zeroHash}}
	job := JobInfo{JobID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", State: "succeeded", SubmittedAt: at, StartedAt: &at, FinishedAt: &later,
		Files: files, Options: map[string]string{"method": "pics"}, Attempts: 1, ExitCode: &exit, Results: results,
		ClientAddr: "127.0.0.1:40000", SubmissionID: "sub-1"}
	queued := JobInfo{JobID: "bbbbbbbbbbbbbbbbbbbbbbbbba", State: "queued", Position: 2, SubmittedAt: at, Files: files}
	status := StatusReply{Version: "v1", Protocol: Version, UptimeSeconds: 1.5, StartedAt: at, MaxWorkers: 2}
	// Through JSON, so that the test does not name the map's key type.
	if err := json.Unmarshal([]byte(`{"queued":1,"running":2,"succeeded":3,"failed":4,"cancelled":5}`), &status.Jobs); err != nil {
		t.Fatal(err)
	}
	workers := WorkersReply{MaxJobs: 4, Paused: true, PauseReason: "cpu", Workers: []WorkerInfo{
		{ID: 1, State: "idle", Since: at}, {ID: 2, State: "busy", JobID: job.JobID, Since: at},
		{ID: 3, State: "paused", Since: at}, {ID: 4, State: "stopping", JobID: queued.JobID, Since: at},
	}}
	admin := AdminStatus{StatusReply: status, Workers: workers, Disks: []DiskInfo{},
		KeptUploads: []KeptUpload{
			{SubmissionID: "sub-2", Client: "127.0.0.1", State: "receiving", Files: 1, Bytes: 10, BytesKept: 5},
			{SubmissionID: "sub-3", State: "waiting", Files: 2, Bytes: 20, BytesKept: 20, Expires: &later},
		}}
	msgs := []struct {
		typ  Type
		body any
	}{
		{TypeJob, job},
		{TypeEvent, Event{Job: queued}},
		{TypeQueueReply, QueueReply{Jobs: []JobInfo{queued, job}}},
		{TypeResults, Results{Job: job, Files: results}},
		{TypeStatusReply, status},
		{TypeAdminWorkersReply, workers},
		{TypeAdminStatusReply, admin},
		{TypeAdminCancelReply, CancelReply{JobID: queued.JobID, PreviousState: "running", State: "cancelled"}},
		{TypeSubmit, Submit{SubmissionID: "sub-1", Files: []FileInfo{{Name: "P00000.7", Size: 12}}, Options: map[string]string{"b": "2", "a": "1"}}},
		{TypeHello, Hello{Hashes: []string{HashBLAKE3, HashSHA256}}},
		{TypeHelloReply, HelloReply{Protocol: 3, Hash: HashBLAKE3}},
		{TypeFileDone, NewFileDone(HashSHA256, zeroHash)},
		{TypeFileDone, NewFileDone(HashBLAKE3, zeroHash)},
		{TypeResults, Results{Job: job, Files: []FileSum{{Name: "images/slice_001.dcm", Size: 3, SHA256: zeroHash, BLAKE3: zeroHash}}}},
		{TypeJob, JobInfo{JobID: "cccccccccccccccccccccccccc", State: "queued", SubmittedAt: at, Files: []FileSum{{Name: "k.cfl", Size: 8}}}},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		var frame bytes.Buffer
		if err := WriteMessage(&frame, m.typ, m.body); err != nil {
			t.Fatalf("write %s: %v", m.typ, err)
		}
		// The golden file holds one message a line, without its length.
		b := frame.Bytes()
		if n := binary.BigEndian.Uint32(b); int(n) != len(b)-4 {
			t.Fatalf("%s: length %d, then %d bytes", m.typ, n, len(b)-4)
		}
		buf.Write(b[4:])
		buf.WriteByte('\n')
	}
	golden := filepath.Join("testdata", "wire.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("wire bytes differ from %s:\ngot:\n%q\nwant:\n%q", golden, buf.Bytes(), want)
	}
}

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"
