package listen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/secure"
)

// logBuffer collects JSON log records; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the records logged so far.
func (l *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// waitFor polls until a record with msg is logged and returns it.
func (l *logBuffer) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		for _, r := range l.records(t) {
			if r["msg"] == msg {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q record in time; log:\n%s", msg, l.b.String())
		}
		time.Sleep(wait)
	}
}

// serve runs listen.Serve on a fresh loopback listener until the test ends.
func serve(t *testing.T, allow *allowlist.List, key keys.Key) (addr string, logs *logBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ep := &listen.Endpoint{
		Name: "client", Listener: ln, Allow: allow,
		Secure: secure.Config{Key: key, Role: secure.RoleClient, HandshakeTimeout: time.Minute},
		Handle: func(ctx context.Context, c *secure.Conn, log *slog.Logger) { log.Info("handled") },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); listen.Serve(ctx, ep, log) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
	})
	return ln.Addr().String(), logs
}

// checkConnRecord checks that r carries conn_id and the peer want.
func checkConnRecord(t *testing.T, r map[string]any, peer string) {
	t.Helper()
	if id, _ := r["conn_id"].(string); id == "" {
		t.Errorf("record %q has no conn_id: %v", r["msg"], r)
	}
	if r["peer"] != peer {
		t.Errorf("record %q has peer %v, want %s", r["msg"], r["peer"], peer)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConnRecordsRefusedByAllowList(t *testing.T) {
	allow, err := allowlist.Parse("192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	addr, logs := serve(t, allow, keys.MustGenerate())
	c := dial(t, addr)
	r := logs.waitFor(t, "connection refused: address not in the allow-list")
	checkConnRecord(t, r, c.LocalAddr().String())
	// The refused connection is closed without a word.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("refused connection: read %d bytes, %v; want EOF", n, err)
	}
}

func TestConnRecordsEvicted(t *testing.T) {
	addr, logs := serve(t, nil, keys.MustGenerate())
	// Connections that never start the handshake fill the per-address
	// quota of unauthenticated connections; the next one evicts the
	// oldest, which is closed without a word.
	var conns []net.Conn
	for range listen.MaxUnauthConnsPerIP {
		conns = append(conns, dial(t, addr))
	}
	c := dial(t, addr)
	r := logs.waitFor(t, "connection evicted: the oldest in the handshake from its address, for a newer one")
	checkConnRecord(t, r, conns[0].LocalAddr().String())
	conns[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := conns[0].Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
		t.Errorf("evicted connection: read %d bytes, %v; want EOF", n, err)
	}
	// The newest connection's accept record follows the eviction's.
	deadline := time.Now().Add(20 * time.Second)
	for !slices.ContainsFunc(logs.records(t), func(r map[string]any) bool { return r["peer"] == c.LocalAddr().String() }) {
		if time.Now().After(deadline) {
			t.Fatal("the newest connection was not accepted in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	accepted := 0
	ids := map[any]bool{}
	var newest any
	for _, r := range logs.records(t) {
		if r["msg"] == "connection accepted" {
			accepted++
			if id, _ := r["conn_id"].(string); id == "" {
				t.Errorf("accept record without conn_id: %v", r)
			}
			ids[r["conn_id"]] = true
			if r["peer"] == c.LocalAddr().String() {
				newest = r["conn_id"]
			}
		}
	}
	if accepted != listen.MaxUnauthConnsPerIP+1 || len(ids) != accepted {
		t.Errorf("%d accept records with %d distinct conn_ids, want %d", accepted, len(ids), listen.MaxUnauthConnsPerIP+1)
	}
	if r["evicted_by"] != newest || newest == nil {
		t.Errorf("eviction record names evicted_by %v, want the newest connection's id %v", r["evicted_by"], newest)
	}
	for _, r := range logs.records(t) {
		if r["msg"] == "handshake failed" {
			t.Errorf("the evicted connection is also logged as a failed handshake: %v", r)
		}
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func TestConnRecordsSession(t *testing.T) {
	key := keys.MustGenerate()
	addr, logs := serve(t, nil, key)
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, err := secure.Client(ctx, c, secure.Config{Key: key, Role: secure.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	logs.waitFor(t, "connection closed")
	// A wrong key: the handshake fails, and that record names the
	// connection too.
	bad := dial(t, addr)
	if _, err := secure.Client(ctx, bad, secure.Config{Key: keys.MustGenerate(), Role: secure.RoleClient}); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	logs.waitFor(t, "handshake failed")
	want := map[string]string{
		"connection accepted":   c.LocalAddr().String(),
		"session authenticated": c.LocalAddr().String(),
		"handled":               c.LocalAddr().String(),
		"handshake failed":      bad.LocalAddr().String(),
	}
	ids := map[string]map[any]bool{} // peer → conn_ids
	for _, r := range logs.records(t) {
		msg, _ := r["msg"].(string)
		if peer, ok := want[msg]; ok || msg == "connection closed" {
			if msg == "connection closed" {
				peer, _ = r["peer"].(string)
			}
			checkConnRecord(t, r, peer)
			if ids[peer] == nil {
				ids[peer] = map[any]bool{}
			}
			ids[peer][r["conn_id"]] = true
			delete(want, msg)
		}
	}
	if len(want) != 0 {
		t.Errorf("records missing: %v", want)
	}
	for peer, set := range ids {
		if len(set) != 1 {
			t.Errorf("records of the connection from %s carry %d conn_ids, want 1", peer, len(set))
		}
	}
}
