package protocol

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRelayMessagesRoundTrip sends each relay admin reply and a relayed job
// through the framing and strict decoding.
func TestRelayMessagesRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	msgs := []struct {
		typ  Type
		body any
		into func() any
	}{
		{TypeRelayStatusReply, &RelayStatus{Version: "v", Protocol: Version, UptimeSeconds: 1.5, StartedAt: now,
			ClientsConnected: 2, ClientsTotal: 9, JobsRelayed: 4, BytesIn: 1 << 40, BytesOut: 7, Backends: 3, BackendsHealthy: 2},
			func() any { return &RelayStatus{} }},
		{TypeRelayBackendsReply, &RelayBackends{Backends: []BackendInfo{
			{Address: "a:1", Healthy: true, LastCheck: now, LatencySeconds: 0.002, Version: "v", Queued: 1, Running: 2, Uploading: 1, JobsPlaced: 5},
			{Address: "[::1]:2", LastError: "health check: refused", LastErrorAt: now},
		}}, func() any { return &RelayBackends{} }},
		{TypeRelayClientsReply, &RelayClients{Clients: []RelayClientInfo{
			{Address: "127.0.0.1:5", ConnectedSince: now, Request: "wait", JobID: "j", Backend: "a:1", Requests: 3, BytesIn: 10},
		}}, func() any { return &RelayClients{} }},
		{TypeJob, &JobInfo{JobID: "j", State: "queued", SubmittedAt: now, Backend: "a:1"}, func() any { return &JobInfo{} }},
		{TypeQueueReply, &QueueReply{Jobs: []JobInfo{{JobID: "j", Backend: "b:2"}}, Unavailable: []string{"a:1"}},
			func() any { return &QueueReply{} }},
	}
	for _, m := range msgs {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m.typ, m.body); err != nil {
			t.Fatalf("write %s: %v", m.typ, err)
		}
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatalf("read %s: %v", m.typ, err)
		}
		v := m.into()
		if err := got.Decode(m.typ, v); err != nil {
			t.Fatalf("decode %s: %v", m.typ, err)
		}
		if diff := cmp.Diff(m.body, v); diff != "" {
			t.Errorf("%s round trip (-sent +got):\n%s", m.typ, diff)
		}
	}
	// A backend never checked has no last_check at all, not year 1.
	var buf bytes.Buffer
	WriteMessage(&buf, TypeRelayBackendsReply, RelayBackends{Backends: []BackendInfo{{Address: "a:1"}}})
	if s := buf.String(); strings.Contains(s, "last_check") || strings.Contains(s, "0001-01-01") {
		t.Errorf("unchecked backend encodes a zero time: %s", s[4:])
	}
	// A job without a backend (straight from a server) has no backend field.
	buf.Reset()
	WriteMessage(&buf, TypeJob, JobInfo{JobID: "j"})
	if strings.Contains(buf.String(), "backend") {
		t.Errorf("job without backend: %s", buf.String()[4:])
	}
}
