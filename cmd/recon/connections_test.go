package main

// Peers that never speak recon's protocol, against the real binary.

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// closedByPeer reads from c until the peer closes it, or until bound. It
// returns the error that ended the read (EOF or a reset) and fails the test
// if the connection is still open at the bound or sent data.
func closedByPeer(t *testing.T, c net.Conn, bound time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound))
	n, err := c.Read(make([]byte, 512))
	switch {
	case n > 0:
		t.Errorf("%s: the server answered %d bytes", what, n)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("%s: still open after %s", what, bound)
	default:
		t.Errorf("%s: read error %v, want EOF or a reset", what, err)
	}
}

// TestGarbageAndIdlePeers opens raw TCP connections to a real `recon
// server`: some send garbage, some send nothing or stop half-way through
// the handshake, one authenticates and then sends nothing. The server
// closes each (the garbage at once, the others after
// HANDSHAKE_TIMEOUT_SECONDS or IDLE_TIMEOUT_SECONDS) while `recon status`
// is served.
func TestGarbageAndIdlePeers(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript),
		"HANDSHAKE_TIMEOUT_SECONDS = 2", "IDLE_TIMEOUT_SECONDS = 2")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	// bound is far above both timeouts: it only keeps a broken server from
	// hanging the test.
	const bound = 30 * time.Second

	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", srv.clientAddr, bound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	k, _ := keys.Parse(key)
	idleAuth, err := secure.Dial(t.Context(), srv.clientAddr, secure.Config{Key: k, Role: secure.RoleClient})
	if err != nil {
		t.Fatalf("authenticated connection: %v", err)
	}
	t.Cleanup(func() { idleAuth.Close() })

	idle := map[string]net.Conn{
		"silent":                     dial(),
		"half a preamble":            dial(),
		"preamble, no first message": dial(),
	}
	write := func(c net.Conn, b []byte) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write(idle["half a preamble"], []byte("REC"))
	write(idle["preamble, no first message"], []byte{'R', 'C', 'N', 0, secure.ProtocolVersion, byte(secure.RoleClient)})

	garbage := map[string][]byte{
		"HTTP request":    []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
		"TLS hello":       append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, make([]byte, 64)...),
		"random bytes":    pseudoRandom(4096),
		"zeros":           make([]byte, 1024),
		"SSH banner":      []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"oversize length": []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	gconns := map[string]net.Conn{}
	for name, b := range garbage {
		c := dial()
		write(c, b)
		gconns[name] = c
	}
	// Meanwhile a good client is served.
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 || !strings.Contains(r.stdout, "uptime") {
		t.Errorf("recon status next to garbage and idle peers: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for name, c := range gconns {
		closedByPeer(t, c, bound, "garbage ("+name+")")
	}
	for name, c := range idle {
		closedByPeer(t, c, bound, "idle peer ("+name+")")
	}
	idleAuth.SetReadDeadline(time.Now().Add(bound))
	if n, err := idleAuth.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("authenticated idle session: Read = %d, %v; want it closed by the server", n, err)
	}
	// And the server still serves.
	if r := runRecon(t, dir, "status", "--opts", "client.opts"); r.code != 0 {
		t.Errorf("recon status after the peers were dropped: exit %d\n%s", r.code, r.stderr)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	if !strings.Contains(string(log), "handshake failed") {
		t.Errorf("the server log does not record the failed handshakes")
	}
}

// pseudoRandom returns n pseudo-random bytes, the same each run.
func pseudoRandom(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
