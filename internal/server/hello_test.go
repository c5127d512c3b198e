package server_test

import (
	"slices"
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// hello says hello on rc offering hashes and returns the server's choice.
func hello(t *testing.T, rc *secure.Conn, hashes ...string) string {
	t.Helper()
	m, err := request(rc, protocol.TypeHello, protocol.Hello{Hashes: hashes})
	if err != nil {
		t.Fatal(err)
	}
	var rep protocol.HelloReply
	if err := m.Decode(protocol.TypeHelloReply, &rep); err != nil {
		t.Fatalf("hello %q refused: %v", hashes, err)
	}
	if rep.Protocol != protocol.Version {
		t.Errorf("hello_reply protocol %d, want %d", rep.Protocol, protocol.Version)
	}
	return rep.Hash
}

// TestHelloRules: the server chooses the first hash it knows of those
// offered (SHA-256 when none), and refuses a hello that is malformed,
// repeated or after a transfer, ending the session.
func TestHelloRules(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	for _, tt := range []struct {
		offer []string
		want  string
	}{
		{[]string{"blake3", "sha256"}, "blake3"},
		{[]string{"sha256", "blake3"}, "sha256"},
		{[]string{"k12"}, "sha256"},
	} {
		if got := hello(t, rawClient(t, ctx, s), tt.offer...); got != tt.want {
			t.Errorf("hello %q chose %q, want %q", tt.offer, got, tt.want)
		}
	}
	refused := map[string]func(t *testing.T, rc *secure.Conn){
		"empty list": func(t *testing.T, rc *secure.Conn) {
			protocol.WriteMessage(rc, protocol.TypeHello, protocol.Hello{})
		},
		"bad name": func(t *testing.T, rc *secure.Conn) {
			protocol.WriteMessage(rc, protocol.TypeHello, protocol.Hello{Hashes: []string{"SHA-256"}})
		},
		"twice": func(t *testing.T, rc *secure.Conn) {
			hello(t, rc, "sha256")
			protocol.WriteMessage(rc, protocol.TypeHello, protocol.Hello{Hashes: []string{"blake3"}})
		},
		"after a transfer": func(t *testing.T, rc *secure.Conn) {
			data := []byte("0123456789")
			startUpload(t, rc, protocol.FileInfo{Name: "a.7", Size: 10})
			sendRaw(t, rc, data, sha256Hex(data))
			if m, err := protocol.ReadMessage(rc); err != nil || m.Decode(protocol.TypeJob, nil) != nil {
				t.Fatalf("upload: %v", err)
			}
			protocol.WriteMessage(rc, protocol.TypeHello, protocol.Hello{Hashes: []string{"blake3"}})
		},
	}
	for name, f := range refused {
		t.Run(name, func(t *testing.T) {
			rc := rawClient(t, ctx, s)
			f(t, rc)
			if code := wireError(t, rc); code != protocol.CodeBadRequest {
				t.Errorf("answer %q, want bad_request", code)
			}
			expectSessionEnd(t, rc)
		})
	}
}

// TestBLAKE3FileDone: in a session that chose BLAKE3, a file_done with
// the SHA-256 field (or both) is a bad request, and a BLAKE3 that differs
// is a hash mismatch; nothing is stored. The right one makes the job,
// whose view has the file's BLAKE3 and no SHA-256.
func TestBLAKE3FileDone(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	data := []byte("0123456789")
	for _, tt := range []struct {
		name string
		done protocol.FileDone
		want protocol.Code
	}{
		{"sha256 field", protocol.FileDone{SHA256: sha256Hex(data)}, protocol.CodeBadRequest},
		{"both fields", protocol.FileDone{SHA256: sha256Hex(data), BLAKE3: blake3Hex(data)}, protocol.CodeBadRequest},
		{"other bytes", protocol.FileDone{BLAKE3: blake3Hex([]byte("9876543210"))}, protocol.CodeHashMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := rawClient(t, ctx, s)
			hello(t, rc, "blake3")
			startUpload(t, rc, protocol.FileInfo{Name: "a.7", Size: 10})
			rc.Write(data)
			protocol.WriteMessage(rc, protocol.TypeFileDone, tt.done)
			if code := wireError(t, rc); code != tt.want {
				t.Errorf("answer %q, want %q", code, tt.want)
			}
		})
	}
	checkNoJobs(t, ctx, s)
	rc := rawClient(t, ctx, s)
	hello(t, rc, "blake3")
	startUpload(t, rc, protocol.FileInfo{Name: "a.7", Size: 10})
	rc.Write(data)
	m, err := request(rc, protocol.TypeFileDone, protocol.FileDone{BLAKE3: blake3Hex(data)})
	if err != nil {
		t.Fatal(err)
	}
	var job protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &job); err != nil {
		t.Fatalf("upload with the right BLAKE3 refused: %v", err)
	}
	if f := job.Files[0]; f.SHA256 != "" || f.BLAKE3 != blake3Hex(data) || f.Size != 10 {
		t.Errorf("job view of the file: %+v, want its BLAKE3 and no SHA-256", f)
	}
	// A session that checks SHA-256 is shown no BLAKE3 (a version-2
	// client decodes job views strictly), and this file has no SHA-256.
	m, err = request(rawClient(t, ctx, s), protocol.TypeJobStatus, protocol.JobRef{JobID: job.JobID})
	if err != nil {
		t.Fatal(err)
	}
	var view protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &view); err != nil {
		t.Fatal(err)
	}
	if f := view.Files[0]; f.SHA256 != "" || f.BLAKE3 != "" || f.Size != 10 {
		t.Errorf("view of the file in a SHA-256 session: %+v, want name and size only", f)
	}
}

// TestResumeWithAnotherHash breaks an upload in a SHA-256 session and
// resumes it in a BLAKE3 one: the server reads back what it kept (the
// first file whole, part of the second) into BLAKE3, and the job's files
// are the originals.
func TestResumeWithAnotherHash(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "resume-hash", 300_000, true)

	rc := rawClient(t, ctx, s)
	hello(t, rc, "blake3")
	ready, err := announce(t, rc, r.submit("resume-hash"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{10_000, 300_000, 0}; !slices.Equal(ready.Resume, want) {
		t.Fatalf("resume offsets %v, want %v", ready.Resume, want)
	}
	for i, d := range r.data {
		rc.Write(d[ready.Resume[i]:])
		protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{BLAKE3: blake3Hex(d)})
	}
	m, err := protocol.ReadMessage(rc)
	if err != nil {
		t.Fatal(err)
	}
	var job protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &job); err != nil {
		t.Fatalf("resumed upload refused: %v", err)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}
