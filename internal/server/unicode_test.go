package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestNamesNotUnicodeOnTheWire submits file names (and an option) that are
// not valid Unicode - raw bytes, a lone UTF-16 surrogate escape, a
// reversed pair - on authenticated sessions: each is refused with
// bad_request naming the problem, where encoding/json alone would have
// stored the name with U+FFFD in it. Nothing is stored; a name escaped as
// a valid surrogate pair is taken as the character it spells.
func TestNamesNotUnicodeOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	submit := func(name string) string {
		return `{"type":"submit","body":{"submission_id":"u1","files":[{"name":"` + name + `","size":1}]}}`
	}
	const notUTF8, lone = "is not valid UTF-8", "surrogate pair without its other half"
	tests := []struct {
		name, payload, want string
	}{
		{"raw byte", submit("scan\xff.7"), notUTF8},
		{"Latin-1", submit("caf\xe9.7"), notUTF8},
		{"surrogate in UTF-8", submit("a\xed\xb2\x80.7"), notUTF8},
		{"lone low surrogate", submit(`\udc80.7`), lone},
		{"lone high surrogate", submit(`scan\ud800.7`), lone},
		{"reversed pair", submit(`\ude00\ud83d.7`), lone},
		{"option value", `{"type":"submit","body":{"files":[{"name":"a.7","size":1}],"options":{"k":"\udc80"}}}`, lone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := rawClient(t, ctx, s)
			if _, err := rc.Write(rawFrame(tt.payload)); err != nil {
				t.Fatal(err)
			}
			rc.SetReadDeadline(time.Now().Add(pollTimeout))
			m, err := protocol.ReadMessage(rc)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			err = m.Decode(protocol.TypeSubmitReady, nil)
			if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("answer %q: %v, want bad_request containing %q", m.Type, err, tt.want)
			}
			expectSessionEnd(t, rc)
		})
	}
	checkNothingStored(t, ctx, s)

	// A valid pair is the character it spells.
	rc := rawClient(t, ctx, s)
	if _, err := rc.Write(rawFrame(submit(`scan\ud83d\ude00.7`))); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(pollTimeout))
	m, err := protocol.ReadMessage(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
		t.Fatalf("a name escaped as a valid surrogate pair: %v", err)
	}
	sum := sha256.Sum256([]byte("x"))
	if _, err := rc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if m, err = request(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: hex.EncodeToString(sum[:])}); err != nil {
		t.Fatal(err)
	}
	var job protocol.JobInfo
	if err := m.Decode(protocol.TypeJob, &job); err != nil {
		t.Fatal(err)
	}
	if len(job.Files) != 1 || job.Files[0].Name != "scan\U0001F600.7" {
		t.Errorf("job files %+v, want one named %q", job.Files, "scan\U0001F600.7")
	}
	checkServes(t, ctx, s)
}
