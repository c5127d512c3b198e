package secure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// The short session the tampering tests run: a few records each way,
// covering empty-ish, small and multi-record writes.
var (
	sessionRequest  = [][]byte{[]byte("hello"), randomBytes(100, 7), []byte("x")}
	sessionResponse = [][]byte{[]byte("response"), randomBytes(150, 8)}
)

type sessionResult struct {
	clientErr, serverErr error  // handshake errors
	serverGot, clientGot []byte // what each side read
	serverEnd, clientEnd error  // what ended each side's reading
	c2s, s2c             int    // bytes each way
}

// runSession runs the short session over an in-memory connection. tamper
// may arrange for the client's writes (c2s) or the server's (s2c) to be
// altered, cut or recorded.
func runSession(t *testing.T, k keys.Key, tamper func(c2s, s2c *memConn)) sessionResult {
	t.Helper()
	a, b := memPipe()
	if tamper != nil {
		tamper(a, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var res sessionResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s, err := Server(ctx, b, testConfig(k, RoleClient))
		if err != nil {
			res.serverErr = err
			return
		}
		res.serverGot, res.serverEnd = converse(s, sessionResponse)
	}()
	go func() {
		defer wg.Done()
		c, err := Client(ctx, a, testConfig(k, RoleClient))
		if err != nil {
			res.clientErr = err
			return
		}
		res.clientGot, res.clientEnd = converse(c, sessionRequest)
	}()
	wg.Wait()
	res.c2s, res.s2c = a.off, b.off
	return res
}

// converse writes out (then the close record) while reading the peer to
// its end, and closes c.
func converse(c *Conn, out [][]byte) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, p := range out {
			if _, err := c.Write(p); err != nil {
				return
			}
		}
		_ = c.CloseWrite()
	}()
	got, err := readAll(c)
	if err != io.EOF {
		// Our side failed: close, so a writer blocked on the peer ends.
		_ = c.Close()
	}
	<-done
	_ = c.Close()
	return got, err
}

// check reports a session in which a side accepted altered data, or ended
// cleanly although its peer's stream was altered.
func (r sessionResult) check(t *testing.T, c2sAltered, s2cAltered bool) {
	t.Helper()
	req, resp := bytes.Join(sessionRequest, nil), bytes.Join(sessionResponse, nil)
	if !bytes.HasPrefix(req, r.serverGot) {
		t.Errorf("server received data that was not sent: %q", r.serverGot)
	}
	if !bytes.HasPrefix(resp, r.clientGot) {
		t.Errorf("client received data that was not sent: %q", r.clientGot)
	}
	serverClean := r.serverErr == nil && r.serverEnd == io.EOF
	clientClean := r.clientErr == nil && r.clientEnd == io.EOF
	if c2sAltered && serverClean {
		t.Errorf("server ended cleanly with %d bytes despite the altered stream", len(r.serverGot))
	}
	if s2cAltered && clientClean {
		t.Errorf("client ended cleanly with %d bytes despite the altered stream", len(r.clientGot))
	}
	if serverClean && !bytes.Equal(r.serverGot, req) {
		t.Errorf("server ended cleanly with %d of %d bytes", len(r.serverGot), len(req))
	}
	if clientClean && !bytes.Equal(r.clientGot, resp) {
		t.Errorf("client ended cleanly with %d of %d bytes", len(r.clientGot), len(resp))
	}
}

func cleanSession(t *testing.T, k keys.Key) sessionResult {
	t.Helper()
	res := runSession(t, k, nil)
	if res.clientErr != nil || res.serverErr != nil || res.serverEnd != io.EOF || res.clientEnd != io.EOF {
		t.Fatalf("clean session failed: %+v", res)
	}
	res.check(t, false, false)
	return res
}

// TestBitFlips flips one bit at every byte offset of both directions of a
// short session - preamble, handshake messages, hello, data and close
// records - and checks that it always fails and never yields altered data.
func TestBitFlips(t *testing.T) {
	k := keys.MustGenerate()
	clean := cleanSession(t, k)
	for _, dir := range []string{"c2s", "s2c"} {
		total := clean.c2s
		if dir == "s2c" {
			total = clean.s2c
		}
		for off := range total {
			t.Run(fmt.Sprintf("%s/%d", dir, off), func(t *testing.T) {
				res := runSession(t, k, func(c2s, s2c *memConn) {
					if dir == "c2s" {
						c2s.flipAt = off
					} else {
						s2c.flipAt = off
					}
				})
				res.check(t, dir == "c2s", dir == "s2c")
			})
		}
	}
}

// TestTruncation cuts each direction of a short session at every offset:
// the reading side must see an error, never a clean end.
func TestTruncation(t *testing.T) {
	k := keys.MustGenerate()
	clean := cleanSession(t, k)
	for _, dir := range []string{"c2s", "s2c"} {
		total := clean.c2s
		if dir == "s2c" {
			total = clean.s2c
		}
		for off := range total + 1 {
			t.Run(fmt.Sprintf("%s/%d", dir, off), func(t *testing.T) {
				res := runSession(t, k, func(c2s, s2c *memConn) {
					if dir == "c2s" {
						c2s.cutAt = off
					} else {
						s2c.cutAt = off
					}
				})
				cut := off < total
				res.check(t, cut && dir == "c2s", cut && dir == "s2c")
				if !cut && (res.serverEnd != io.EOF || res.clientEnd != io.EOF) {
					t.Errorf("uncut session did not end cleanly: %v, %v", res.serverEnd, res.clientEnd)
				}
			})
		}
	}
}
