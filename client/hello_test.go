package client_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// TestHelloToVersion2Server has a fake server of protocol version 2 turn
// the hello down as a version-2 server does (bad_request, then it closes
// the session): the client dials again, says no hello, and fetches with
// SHA-256.
func TestHelloToVersion2Server(t *testing.T) {
	key := keys.MustGenerate()
	data := []byte("image data")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan []protocol.Type, 2)
	go func() {
		for range 2 {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			var seen []protocol.Type
			func() {
				c, err := secure.Server(ctx, conn, secure.Config{Key: key, Role: secure.RoleClient})
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				for {
					m, err := protocol.ReadMessage(c)
					if err != nil {
						return
					}
					seen = append(seen, m.Type)
					switch m.Type {
					case protocol.TypeHello:
						protocol.WriteError(c, protocol.Errorf(protocol.CodeBadRequest, `unknown request "hello"`))
						return
					case protocol.TypeFetch:
						protocol.WriteMessage(c, protocol.TypeResults, protocol.Results{
							Job:   protocol.JobInfo{JobID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", State: "succeeded"},
							Files: []protocol.FileSum{{Name: "a.dcm", Size: int64(len(data)), SHA256: hexSHA(data)}},
						})
						c.Write(data)
					case protocol.TypeAck:
						protocol.WriteMessage(c, protocol.TypeAckDone, protocol.JobRef{JobID: "aaaaaaaaaaaaaaaaaaaaaaaaaa"})
					}
				}
			}()
			served <- seen
		}
	}()
	c, err := client.Dial(ctx, client.Config{Address: ln.Addr().String(), Key: key.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	_, files, err := c.Fetch(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa", filepath.Join(t.TempDir(), "out"), nil)
	if err != nil {
		t.Fatalf("Fetch from a version-2 server: %v", err)
	}
	if files[0].SHA256 != hexSHA(data) {
		t.Errorf("result %+v", files[0])
	}
	c.Close()
	first, second := <-served, <-served
	if len(first) != 1 || first[0] != protocol.TypeHello {
		t.Errorf("first session: %v, want a hello only", first)
	}
	if len(second) == 0 || second[0] != protocol.TypeFetch {
		t.Errorf("second session: %v, want a fetch first (no hello)", second)
	}
}

// TestDialRetriesSessionClosedAfterHandshake has a fake server close the
// first session as soon as its handshake is done, as a server over its
// caps for one address does: Dial's hello fails as a busy server's
// unanswered close, DialRetrying tries again, and the second session
// serves.
func TestDialRetriesSessionClosedAfterHandshake(t *testing.T) {
	key := keys.MustGenerate()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2 {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c, err := secure.Server(ctx, conn, secure.Config{Key: key, Role: secure.RoleClient})
			if err != nil {
				conn.Close()
				return
			}
			if i == 0 {
				c.Close()
				continue
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			for {
				m, err := protocol.ReadMessage(c)
				if err != nil {
					break
				}
				switch m.Type {
				case protocol.TypeHello:
					protocol.WriteMessage(c, protocol.TypeHelloReply, protocol.HelloReply{Protocol: protocol.Version, Hash: protocol.HashBLAKE3})
				case protocol.TypeStatus:
					protocol.WriteMessage(c, protocol.TypeStatusReply, protocol.StatusReply{Version: "fake", Protocol: protocol.Version, StartedAt: time.Now()})
				}
			}
			c.Close()
		}
	}()
	cfg := client.Config{Address: ln.Addr().String(), Key: key.Encode()}
	if _, err := client.Dial(ctx, cfg); !errors.Is(err, secure.ErrClosedUnanswered) {
		t.Fatalf("Dial to a server that closes the session after the handshake: %v, want ErrClosedUnanswered", err)
	}
	c, err := client.DialRetrying(ctx, cfg, client.Backoff{Retries: 2, Delay: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("DialRetrying: %v", err)
	}
	if st, err := c.Status(ctx); err != nil || st.Version != "fake" {
		t.Errorf("status on the session that was kept: %+v, %v", st, err)
	}
	c.Close()
	<-done
}
