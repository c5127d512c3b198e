package secure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/recon-mri/recon/internal/keys"
	"golang.org/x/crypto/chacha20poly1305"
)

func TestRoleString(t *testing.T) {
	for _, tc := range []struct {
		r    Role
		want string
	}{
		{RoleClient, "client"},
		{RoleAdmin, "admin"},
		{RoleRelayAdmin, "relay-admin"},
		{0, "role(0)"},
		{9, "role(9)"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Role(%d).String() = %q, want %q", uint8(tc.r), got, tc.want)
		}
	}
}

func TestPreambleBytes(t *testing.T) {
	for _, tc := range []struct {
		r    Role
		want []byte
	}{
		{RoleClient, []byte{'R', 'C', 'N', 0, 2, 1}},
		{RoleAdmin, []byte{'R', 'C', 'N', 0, 2, 2}},
		{RoleRelayAdmin, []byte{'R', 'C', 'N', 0, 2, 3}},
	} {
		id := KeyID{0: 0xaa, KeyIDSize - 1: 0xbb}
		got := preamble(tc.r, id)
		if !bytes.Equal(got[:preambleHeadSize], tc.want) || KeyID(got[preambleHeadSize:]) != id {
			t.Errorf("preamble(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestPSKPerRole(t *testing.T) {
	k := keys.MustGenerate()
	seen := map[string]Role{}
	for _, r := range []Role{RoleClient, RoleAdmin, RoleRelayAdmin} {
		psk, err := derivePSK(k, r, ProtocolVersion)
		if err != nil {
			t.Fatal(err)
		}
		if len(psk) != 32 {
			t.Fatalf("psk for %v has %d bytes", r, len(psk))
		}
		if bytes.Equal(psk, k.Bytes()) {
			t.Errorf("psk for %v is the raw key", r)
		}
		if other, dup := seen[string(psk)]; dup {
			t.Errorf("roles %v and %v share a psk", other, r)
		}
		seen[string(psk)] = r
		again, _ := derivePSK(k, r, ProtocolVersion)
		if !bytes.Equal(psk, again) {
			t.Errorf("psk for %v is not deterministic", r)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	k := keys.MustGenerate()
	for name, cfg := range map[string]Config{
		"no key":        {Role: RoleClient},
		"no role":       {Key: k},
		"bad role":      {Key: k, Role: 7},
		"neg handshake": {Key: k, Role: RoleClient, HandshakeTimeout: -1},
		"neg idle":      {Key: k, Role: RoleClient, IdleTimeout: -1},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := memPipe()
			defer b.Close()
			if _, err := Client(context.Background(), a, cfg); err == nil {
				t.Error("Client accepted the config")
			}
			if _, err := b.w.Write([]byte{0}); err == nil {
				t.Error("Client did not close the connection")
			}
			if _, err := Dial(context.Background(), "127.0.0.1:1", cfg); err == nil || strings.Contains(err.Error(), "dial") {
				t.Errorf("Dial = %v, want a config error before dialling", err)
			}
		})
	}
}

func TestHandshakeAllRoles(t *testing.T) {
	for _, r := range []Role{RoleClient, RoleAdmin, RoleRelayAdmin} {
		t.Run(r.String(), func(t *testing.T) {
			k := keys.MustGenerate()
			c, s := tcpPair(t, testConfig(k, r), testConfig(k, r))
			if c.Role() != r || s.Role() != r {
				t.Errorf("roles = %v, %v, want %v", c.Role(), s.Role(), r)
			}
			if c.RemoteAddr().String() != s.LocalAddr().String() || s.RemoteAddr().String() != c.LocalAddr().String() {
				t.Errorf("addresses do not match: client %v->%v, server %v->%v", c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
			}
			roundTrip(t, c, s, []byte("ping"))
			roundTrip(t, s, c, []byte("pong"))
		})
	}
}

func roundTrip(t *testing.T, from, to *Conn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

// rejected runs a client with ccfg against a server with scfg over TCP, and
// checks that the client gets ErrAuth, the server an error, and that the
// server sent nothing back.
func rejected(t *testing.T, ccfg, scfg Config) (serverErr error) {
	t.Helper()
	ctx := testContext(t)
	ln := listen(t)
	ch := serveOne(ctx, ln, scfg)
	c, err := Dial(ctx, ln.Addr().String(), ccfg)
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial succeeded")
	}
	if !errors.Is(err, ErrAuth) {
		t.Errorf("client error = %v, want ErrAuth", err)
	}
	res := <-ch
	if res.err == nil {
		_ = res.conn.Close()
		t.Fatal("Server succeeded")
	}
	if res.written != 0 {
		t.Errorf("server wrote %d bytes, want 0", res.written)
	}
	return res.err
}

func TestWrongKey(t *testing.T) {
	for _, r := range []Role{RoleClient, RoleAdmin, RoleRelayAdmin} {
		t.Run(r.String(), func(t *testing.T) {
			err := rejected(t, testConfig(keys.MustGenerate(), r), testConfig(keys.MustGenerate(), r))
			if !errors.Is(err, ErrAuth) {
				t.Errorf("server error = %v, want ErrAuth", err)
			}
		})
	}
}

func TestWrongRole(t *testing.T) {
	// The same key on the wrong role's listener: an operator who reused a
	// key still cannot reach the admin channel with the client role, or
	// the other way round.
	k := keys.MustGenerate()
	for _, tc := range []struct{ client, server Role }{
		{RoleClient, RoleAdmin},
		{RoleAdmin, RoleClient},
		{RoleClient, RoleRelayAdmin},
		{RoleRelayAdmin, RoleAdmin},
	} {
		t.Run(tc.client.String()+"-to-"+tc.server.String(), func(t *testing.T) {
			err := rejected(t, testConfig(k, tc.client), testConfig(k, tc.server))
			if !errors.Is(err, ErrPreamble) {
				t.Errorf("server error = %v, want ErrPreamble", err)
			}
		})
	}
}

func TestErrAuthMessage(t *testing.T) {
	k := keys.MustGenerate()
	a, b := memPipe()
	go func() { _, _ = Server(context.Background(), b, testConfig(keys.MustGenerate(), RoleClient)) }()
	_, err := Client(testContext(t), a, testConfig(k, RoleClient))
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("err = %v, want ErrAuth", err)
	}
	msg := err.Error()
	if !errors.Is(err, ErrClosedUnanswered) {
		t.Errorf("err = %v, want ErrClosedUnanswered", err)
	}
	// The three causes a client cannot tell apart, all named.
	for _, want := range []string{"authentication failed", "without answering", "key is wrong", "role (port)", "address is not allowed", "server is busy"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, k.Encode()) || msg != strings.ToLower(msg[:1])+msg[1:] {
		t.Errorf("error %q leaks the key or is not lowercase", msg)
	}
}

// TestPSKBindsRole checks that the role is bound by the PSK, not only by
// the preamble check: a client that sends the admin preamble but holds only
// the client role's PSK (derived from the same key) fails at the first
// message.
func TestPSKBindsRole(t *testing.T) {
	k := keys.MustGenerate()
	a, b := memPipe()
	defer a.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Server(testContext(t), b, testConfig(k, RoleAdmin))
		done <- err
	}()
	psk, _ := derivePSK(k, RoleClient, ProtocolVersion)
	id, _ := DeriveKeyID(k, RoleAdmin)
	pre := preamble(RoleAdmin, id)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suiteAESGCM, Pattern: noise.HandshakeNN, Initiator: true,
		Prologue: pre[:], PresharedKey: psk,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, _ := hs.WriteMessage(nil, nil)
	out := append(pre[:], 0, byte(len(msg)))
	out = append(out, msg...)
	go func() { _, _ = a.Write(out) }()
	n, _ := io.Copy(io.Discard, a)
	err = <-done
	if !errors.Is(err, ErrAuth) {
		t.Errorf("server error = %v, want ErrAuth", err)
	}
	if n != 0 {
		t.Errorf("server answered %d bytes", n)
	}
}

func TestBadPreamble(t *testing.T) {
	good := preamble(RoleClient, KeyID{})
	for name, pre := range map[string][]byte{
		"magic":    append([]byte("RCX\x00"), good[4:]...),
		"http":     []byte("GET / "),
		"version0": {'R', 'C', 'N', 0, 0, 1},
		"role0":    {'R', 'C', 'N', 0, 2, 0},
		"role":     {'R', 'C', 'N', 0, 2, 2},
		"role99":   {'R', 'C', 'N', 0, 2, 99},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			ln := listen(t)
			ch := serveOne(ctx, ln, testConfig(keys.MustGenerate(), RoleClient))
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(testTimeout))
			// Only the preamble: the server must decide on it alone, without
			// waiting for more.
			if _, err := raw.Write(pre); err != nil {
				t.Fatal(err)
			}
			res := <-ch
			if !errors.Is(res.err, ErrPreamble) {
				t.Errorf("server error = %v, want ErrPreamble", res.err)
			}
			if res.written != 0 {
				t.Errorf("server wrote %d bytes", res.written)
			}
			if n, _ := io.Copy(io.Discard, raw); n != 0 {
				t.Errorf("client received %d bytes", n)
			}
		})
	}
}

func TestBadHandshakeLength(t *testing.T) {
	for _, n := range []uint16{0, 1, handshakeMessageSize - 1, handshakeMessageSize + 1, 0xffff} {
		sc := &scriptConn{block: true}
		pre := preamble(RoleClient, KeyID{})
		sc.in = binary.BigEndian.AppendUint16(pre[:], n)
		_, err := Server(context.Background(), sc, testConfig(keys.MustGenerate(), RoleClient))
		if !errors.Is(err, ErrAuth) {
			t.Errorf("length %d: err = %v, want ErrAuth", n, err)
		}
		if sc.readPastEnd || sc.written != 0 {
			t.Errorf("length %d: server read past the length (%v) or wrote %d bytes", n, sc.readPastEnd, sc.written)
		}
	}
}

// recordSession runs a good session over memory and returns everything the
// client sent: preamble, first message, hello, data records, close record.
func recordSession(t *testing.T, k keys.Key) []byte {
	t.Helper()
	a, b := memPipe()
	var rec bytes.Buffer
	a.record = &rec
	ctx := testContext(t)
	done := make(chan error, 1)
	go func() {
		s, err := Server(ctx, b, testConfig(k, RoleClient))
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		got, err := readAll(s)
		if err == io.EOF && string(got) != "secret request" {
			err = errors.New("wrong data")
		}
		done <- err
	}()
	c, err := Client(ctx, a, testConfig(k, RoleClient))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("secret request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("recorded session: server: %v", err)
	}
	_ = c.Close()
	return rec.Bytes()
}

func TestReplay(t *testing.T) {
	k := keys.MustGenerate()
	session := recordSession(t, k)
	firstLen := PreambleSize + lengthSize + handshakeMessageSize
	helloEnd := firstLen + lengthSize + minRecordSize
	for name, replay := range map[string][]byte{
		"first message":              session[:firstLen],
		"first message and hello":    session[:helloEnd],
		"whole session":              session,
		"whole session twice":        append(bytes.Clone(session), session...),
		"first message, data, close": append(bytes.Clone(session[:firstLen]), session[helloEnd:]...),
	} {
		t.Run(name, func(t *testing.T) {
			a, b := memPipe()
			defer a.Close()
			done := make(chan serverResult, 1)
			go func() {
				s, err := Server(testContext(t), b, testConfig(k, RoleClient))
				done <- serverResult{conn: s, err: err}
			}()
			answered := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, a)
				answered <- n
			}()
			go func() {
				_, _ = a.Write(replay)
				_ = a.CloseWrite()
			}()
			res := <-done
			if res.err == nil {
				_ = res.conn.Close()
				t.Fatal("a replay authenticated")
			}
			// The first message alone is valid, so the server does answer
			// it; what it cannot get is a hello sealed for its fresh keys.
			if n := <-answered; n != lengthSize+handshakeMessageSize {
				t.Errorf("server sent %d bytes, want only its handshake message", n)
			}
			if len(replay) >= helloEnd && !errors.Is(res.err, ErrAuth) {
				t.Errorf("server error = %v, want ErrAuth", res.err)
			}
		})
	}
}

func TestServerHandshakeTimeout(t *testing.T) {
	ln := listen(t)
	cfg := testConfig(keys.MustGenerate(), RoleClient)
	cfg.HandshakeTimeout = 100 * time.Millisecond
	ch := serveOne(context.Background(), ln, cfg)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A client that sends the preamble and then stalls.
	pre := preamble(RoleClient, KeyID{})
	if _, err := raw.Write(pre[:]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case res := <-ch:
		if !errors.Is(res.err, os.ErrDeadlineExceeded) {
			t.Errorf("err = %v, want a timeout", res.err)
		}
		if !strings.Contains(res.err.Error(), "100ms") {
			t.Errorf("err = %v, want it to name the timeout", res.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("handshake timeout did not fire")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout fired after %v", d)
	}
}

// silentServer accepts connections and reads from them, never answering.
// Each connection's first read is reported on the returned channel.
func silentServer(t *testing.T) (net.Listener, <-chan struct{}) {
	ln := listen(t)
	got := make(chan struct{}, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { _ = raw.Close() })
		_ = raw.SetDeadline(time.Now().Add(testTimeout))
		buf := make([]byte, 64)
		if _, err := raw.Read(buf); err == nil {
			got <- struct{}{}
		}
		_, _ = io.Copy(io.Discard, raw)
	}()
	return ln, got
}

func TestClientHandshakeTimeout(t *testing.T) {
	ln, _ := silentServer(t)
	cfg := testConfig(keys.MustGenerate(), RoleClient)
	cfg.HandshakeTimeout = 100 * time.Millisecond
	_, err := Dial(context.Background(), ln.Addr().String(), cfg)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrAuth) {
		t.Errorf("err = %v, want a timeout, not ErrAuth", err)
	}
}

func TestClientContextDeadline(t *testing.T) {
	ln, _ := silentServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, ln.Addr().String(), testConfig(keys.MustGenerate(), RoleClient))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestClientContextCancel(t *testing.T) {
	ln, got := silentServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-got // the client is in the handshake
		cancel()
	}()
	_, err := Dial(ctx, ln.Addr().String(), testConfig(keys.MustGenerate(), RoleClient))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestServerContextCancel(t *testing.T) {
	a, b := memPipe()
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Server(ctx, b, testConfig(keys.MustGenerate(), RoleClient))
		done <- err
	}()
	pre := preamble(RoleClient, KeyID{})
	if _, err := a.Write(pre[:]); err != nil { // the server has read this
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := Client(ctx, a, testConfig(keys.MustGenerate(), RoleClient)); !errors.Is(err, context.Canceled) {
		t.Errorf("Client with cancelled ctx: %v", err)
	}
}

func TestHandshakeClearsDeadlines(t *testing.T) {
	k := keys.MustGenerate()
	cfg := testConfig(k, RoleClient)
	cfg.HandshakeTimeout = 50 * time.Millisecond
	c, s := tcpPair(t, cfg, cfg)
	// tcpPair set deadlines; clear them, wait past the handshake timeout,
	// and check the connection still works.
	_ = c.SetDeadline(time.Time{})
	_ = s.SetDeadline(time.Time{})
	timer := time.NewTimer(100 * time.Millisecond)
	<-timer.C
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	_ = s.SetDeadline(time.Now().Add(testTimeout))
	roundTrip(t, c, s, []byte("still here"))
}

// TestCipherMatchesNoise checks that the allocation-free cipher functions
// produce exactly the ciphertexts of flynn/noise's own.
func TestCipherMatchesNoise(t *testing.T) {
	for _, tc := range []struct {
		ours, theirs noise.CipherFunc
	}{
		{cipherFunc{name: "AESGCM", newAEAD: newAES256GCM}, noise.CipherAESGCM},
		{cipherFunc{name: "ChaChaPoly", newAEAD: chacha20poly1305.New, littleEndian: true}, noise.CipherChaChaPoly},
	} {
		if tc.ours.CipherName() != tc.theirs.CipherName() {
			t.Errorf("name %q, want %q", tc.ours.CipherName(), tc.theirs.CipherName())
		}
		var k [32]byte
		_, _ = rand.Read(k[:])
		ours, theirs := tc.ours.Cipher(k), tc.theirs.Cipher(k)
		pt := randomBytes(1000, 1)
		for _, n := range []uint64{0, 1, 255, 256, 1 << 32, noise.MaxNonce} {
			a := ours.Encrypt(nil, n, []byte("ad"), pt)
			b := theirs.Encrypt(nil, n, []byte("ad"), pt)
			if !bytes.Equal(a, b) {
				t.Errorf("%s nonce %d: ciphertexts differ", tc.ours.CipherName(), n)
			}
			if got, err := theirs.Decrypt(nil, n, []byte("ad"), a); err != nil || !bytes.Equal(got, pt) {
				t.Errorf("%s nonce %d: noise cannot decrypt ours: %v", tc.ours.CipherName(), n, err)
			}
		}
	}
}

// TestInteropNoiseCipher runs a handshake with flynn/noise's own AESGCM on
// the client side: the wire protocol is standard Noise.
func TestInteropNoiseCipher(t *testing.T) {
	k := keys.MustGenerate()
	ccfg := testConfig(k, RoleClient)
	ccfg.suite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)
	c, s := tcpPair(t, ccfg, testConfig(k, RoleClient))
	roundTrip(t, c, s, []byte("to server"))
	roundTrip(t, s, c, []byte("to client"))
}
