package server_test

// Control messages as bytes on the wire (docs/SECURITY.md, section 3),
// against a real server on loopback.

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestHostileControlMessagesOnTheWire sends malformed control messages on
// authenticated sessions: each gets a bad_request (or too_large) answer,
// then the session ends, no job is made and the server serves others.
func TestHostileControlMessagesOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	file := `{"name":"a.7","size":1}`
	tests := []struct {
		name string
		raw  []byte
		want protocol.Code
	}{
		{"malformed JSON", rawFrame(`{"type":"status","body":{`), protocol.CodeBadRequest},
		{"not JSON", rawFrame(`hello, server`), protocol.CodeBadRequest},
		{"no type", rawFrame(`{}`), protocol.CodeBadRequest},
		{"unknown envelope field", rawFrame(`{"type":"status","admin":true}`), protocol.CodeBadRequest},
		{"unknown body field", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"path":"/etc"}}`), protocol.CodeBadRequest},
		{"unknown file field", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1,"mode":"0777"}]}}`), protocol.CodeBadRequest},
		{"duplicate type", rawFrame(`{"type":"status","type":"submit","body":{"files":[` + file + `]}}`), protocol.CodeBadRequest},
		{"duplicate files", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"files":[{"name":"b.7","size":1}]}}`), protocol.CodeBadRequest},
		{"duplicate in another case", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"FILES":[{"name":"b.7","size":1}]}}`), protocol.CodeBadRequest},
		{"duplicate option", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"options":{"k":"1","k":"2"}}}`), protocol.CodeBadRequest},
		{"duplicate size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1,"size":1000000}]}}`), protocol.CodeBadRequest},
		{"huge number", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1e400}]}}`), protocol.CodeBadRequest},
		{"number over int64", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":9223372036854775808}]}}`), protocol.CodeBadRequest},
		{"fractional size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":0.5}]}}`), protocol.CodeBadRequest},
		{"negative size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":-5}]}}`), protocol.CodeBadRequest},
		{"deep nesting", rawFrame(`{"type":"status","body":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `}`), protocol.CodeBadRequest},
		{"trailing message", rawFrame(`{"type":"status"}{"type":"queue"}`), protocol.CodeBadRequest},
		{"trailing garbage", rawFrame(`{"type":"status"} ;rm -rf /`), protocol.CodeBadRequest},
		{"type is a number", rawFrame(`{"type":5}`), protocol.CodeBadRequest},
		{"files is a string", rawFrame(`{"type":"submit","body":{"files":"a.7"}}`), protocol.CodeBadRequest},
		{"job id is a list", rawFrame(`{"type":"job_status","body":{"job_id":["x"]}}`), protocol.CodeBadRequest},
		{"options is a list", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"options":["a=b"]}}`), protocol.CodeBadRequest},
		{"zero length", []byte{0, 0, 0, 0}, protocol.CodeBadRequest},
		{"length over the cap", binary.BigEndian.AppendUint32(nil, protocol.MaxMessageSize+1), protocol.CodeTooLarge},
		{"4 GiB length", []byte{0xff, 0xff, 0xff, 0xff}, protocol.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := rawClient(t, ctx, s)
			if _, err := rc.Write(tt.raw); err != nil {
				t.Fatal(err)
			}
			if code := wireError(t, rc); code != tt.want {
				t.Errorf("answer code %s, want %s", code, tt.want)
			}
			expectSessionEnd(t, rc)
		})
	}
	checkNothingStored(t, ctx, s)
	checkServes(t, ctx, s)
}
