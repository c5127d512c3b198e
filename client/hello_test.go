package client_test

import (
	"context"
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
