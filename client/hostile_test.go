package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// hostileServer answers one fetch on a loopback port with the manifest
// files and then body, as a compromised server (or relay) might. A hello
// before the fetch is answered with hash ("" is SHA-256).
func hostileServer(t *testing.T, key keys.Key, hash string, files []protocol.FileSum, body []byte, stall bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	go func() {
		defer close(done)
		defer stop()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c, err := secure.Server(ctx, conn, secure.Config{Key: key, Role: secure.RoleClient})
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		m, err := protocol.ReadMessage(c)
		if err != nil {
			return
		}
		if m.Type == protocol.TypeHello {
			if hash == "" {
				hash = protocol.HashSHA256
			}
			protocol.WriteMessage(c, protocol.TypeHelloReply, protocol.HelloReply{Protocol: protocol.Version, Hash: hash})
			if _, err := protocol.ReadMessage(c); err != nil {
				return
			}
		}
		protocol.WriteMessage(c, protocol.TypeResults, protocol.Results{
			Job:   protocol.JobInfo{JobID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", State: "succeeded"},
			Files: files,
		})
		c.Write(body)
		if stall {
			<-ctx.Done()
			return
		}
		c.CloseWrite()
		// Whatever the client says next (an ack would be a bug), end.
		protocol.ReadMessage(c)
	}()
	t.Cleanup(func() { ln.Close(); stop(); <-done })
	return ln.Addr().String()
}

func hexSHA(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestHostileManifests has a fake server send result manifests a client
// must refuse: names that escape the destination or are unportable,
// duplicates, a name that is both a file and a folder, bad sizes and
// hashes, and bytes that do not match. Fetch fails, nothing is written
// outside a fresh directory beside the destination, and that directory is
// removed.
func TestHostileManifests(t *testing.T) {
	key := keys.MustGenerate()
	data := []byte("image data")
	sum := hexSHA(data)
	f := func(name string) protocol.FileSum {
		return protocol.FileSum{Name: name, Size: int64(len(data)), SHA256: sum}
	}
	b3 := func(name string) protocol.FileSum {
		s := blake3.Sum256(data)
		return protocol.FileSum{Name: name, Size: int64(len(data)), SHA256: sum, BLAKE3: hex.EncodeToString(s[:])}
	}
	tests := []struct {
		name  string
		hash  string // the hello's answer; "" SHA-256
		files []protocol.FileSum
		body  []byte
		want  string
	}{
		{"parent", "", []protocol.FileSum{f("../evil.dcm")}, data, "bad result name"},
		{"nested parent", "", []protocol.FileSum{f("sub/../../evil.dcm")}, data, "bad result name"},
		{"absolute", "", []protocol.FileSum{f("/tmp/evil.dcm")}, data, "bad result name"},
		{"backslash", "", []protocol.FileSum{f(`..\evil.dcm`)}, data, "bad result name"},
		{"drive", "", []protocol.FileSum{f("C:evil.dcm")}, data, "bad result name"},
		{"device", "", []protocol.FileSum{f("sub/NUL")}, data, "bad result name"},
		{"control character", "", []protocol.FileSum{f("a\nb.dcm")}, data, "bad result name"},
		{"bidi", "", []protocol.FileSum{f("gpj.\u202eexe")}, data, "bad result name"},
		{"empty name", "", []protocol.FileSum{f("")}, data, "bad result name"},
		{"negative size", "", []protocol.FileSum{{Name: "a", Size: -1, SHA256: sum}}, nil, "bad manifest entry"},
		{"bad hash", "", []protocol.FileSum{{Name: "a", Size: 1, SHA256: "xyz"}}, []byte("x"), "bad manifest entry"},
		{"duplicate", "", []protocol.FileSum{f("a.dcm"), f("a.dcm")}, append(append([]byte{}, data...), data...), "exists"},
		{"file and folder", "", []protocol.FileSum{f("a"), f("a/b")}, append(append([]byte{}, data...), data...), ""},
		{"wrong bytes", "", []protocol.FileSum{f("a.dcm")}, []byte("IMAGE DATA"), "SHA-256 mismatch"},
		{"short", "", []protocol.FileSum{f("a.dcm")}, data[:3], ""},
		{"blake3 wrong bytes", protocol.HashBLAKE3, []protocol.FileSum{b3("a.dcm")}, []byte("IMAGE DATA"), "BLAKE3 mismatch"},
		{"blake3 bad digest", protocol.HashBLAKE3, []protocol.FileSum{{Name: "a", Size: 1, SHA256: sum, BLAKE3: "xyz"}}, []byte("x"), "bad manifest entry"},
		{"blake3 in a sha256 session", protocol.HashSHA256, []protocol.FileSum{b3("a.dcm")}, data, "in a session that checks sha256"},
		{"hash not offered", "md5", []protocol.FileSum{f("a.dcm")}, data, "did not offer"},
		{"huge size", "", []protocol.FileSum{{Name: "a", Size: 1 << 62, SHA256: sum}}, data, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := hostileServer(t, key, tt.hash, tt.files, tt.body, false)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			parent := t.TempDir()
			dst := filepath.Join(parent, "out")
			// A bad hello reply fails Dial, which says hello; the others
			// fail the fetch.
			c, err := client.Dial(ctx, client.Config{Address: addr, Key: key.Encode()})
			if err == nil {
				defer c.Close()
				_, _, err = c.Fetch(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa", dst, nil)
			}
			if err == nil {
				t.Fatalf("Fetch accepted the manifest %+v", tt.files)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Fetch = %v, want an error containing %q", err, tt.want)
			}
			es, _ := os.ReadDir(parent)
			if len(es) != 0 {
				t.Errorf("left in the destination's parent: %v", es)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(parent), "evil.dcm")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a file escaped the destination")
			}
		})
	}
}

// TestStalledServer has a fake server send part of a result and then
// nothing, without closing (a server stopped with SIGSTOP, or a network
// that silently drops the connection): the fetch fails once the client's
// idle timeout passes, instead of waiting for ever.
func TestStalledServer(t *testing.T) {
	key := keys.MustGenerate()
	data := make([]byte, 1<<20)
	addr := hostileServer(t, key, "", []protocol.FileSum{{Name: "a.dcm", Size: int64(len(data)), SHA256: hexSHA(data)}}, data[:1000], true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Address: addr, Key: key.Encode(), IdleTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _, err = c.Fetch(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa", filepath.Join(t.TempDir(), "out"), nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Fetch from a stalled server = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Fetch from a stalled server took %v", d)
	}
}
