package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

func ringConfig(t testing.TB, r Role, ks []NamedKey) Config {
	t.Helper()
	kr, err := NewKeyring(r, ks)
	if err != nil {
		t.Fatal(err)
	}
	return Config{Keys: kr, Role: r, HandshakeTimeout: testTimeout}
}

// TestKeyringFindsEachKey: each client key opens a session the server
// knows by that key's name.
func TestKeyringFindsEachKey(t *testing.T) {
	var ks []NamedKey
	for i := range 5 {
		ks = append(ks, NamedKey{Name: fmt.Sprintf("scanner-%d", i), Key: keys.MustGenerate()})
	}
	scfg := ringConfig(t, RoleClient, ks)
	for _, nk := range ks {
		c, s := tcpPair(t, testConfig(nk.Key, RoleClient), scfg)
		if s.KeyName() != nk.Name {
			t.Errorf("server sees %q, want %q", s.KeyName(), nk.Name)
		}
		want, _ := DeriveKeyID(nk.Key, RoleClient)
		if s.KeyID() != want || c.KeyID() != want {
			t.Errorf("key ids: server %x, client %x, want %x", s.KeyID(), c.KeyID(), want)
		}
		if s.OldProtocol() {
			t.Error("a version-2 session is marked old")
		}
	}
}

// TestUnknownKeyIDFailsAsWrongKey: a key id the server does not know and a
// known key id with a wrong key fail the same way on both sides: no byte
// back, ErrAuth, the same words.
func TestUnknownKeyIDFailsAsWrongKey(t *testing.T) {
	known := keys.MustGenerate()
	scfg := ringConfig(t, RoleClient, []NamedKey{{Name: "a", Key: known}})
	// try sends pre and a first message made with k, and returns the
	// server's error without the peer's address.
	try := func(pre [PreambleSize]byte, k keys.Key) string {
		ctx := testContext(t)
		ln := listen(t)
		ch := serveOne(ctx, ln, scfg)
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(testTimeout))
		psk, _ := derivePSK(k, RoleClient, ProtocolVersion)
		hs, err := newHandshakeState(&Config{Role: RoleClient}, true, psk, pre[:])
		if err != nil {
			t.Fatal(err)
		}
		msg, _, _, _ := hs.WriteMessage(nil, nil)
		out := binary.BigEndian.AppendUint16(pre[:], uint16(len(msg)))
		if _, err := raw.Write(append(out, msg...)); err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, raw)
		res := <-ch
		if !errors.Is(res.err, ErrAuth) {
			t.Errorf("server error = %v, want ErrAuth", res.err)
		}
		if n != 0 || res.written != 0 {
			t.Errorf("server answered %d bytes (counted %d)", n, res.written)
		}
		// The error names the peer's address, which differs: compare the rest.
		return res.err.Error()[strings.LastIndex(res.err.Error(), ": ")+2:]
	}
	knownID, _ := DeriveKeyID(known, RoleClient)
	wrong := keys.MustGenerate()
	wrongID, _ := DeriveKeyID(wrong, RoleClient)
	e1 := try(preamble(RoleClient, knownID), wrong) // known id, wrong key
	e2 := try(preamble(RoleClient, wrongID), wrong) // unknown id (and key)
	if e1 != e2 {
		t.Errorf("server errors differ: %q and %q", e1, e2)
	}

	// Through the real client: ErrClosedUnanswered, as for a wrong key.
	ln := listen(t)
	ch := serveOne(testContext(t), ln, scfg)
	if _, err := Dial(testContext(t), ln.Addr().String(), testConfig(wrong, RoleClient)); !errors.Is(err, ErrClosedUnanswered) {
		t.Errorf("client error = %v, want ErrClosedUnanswered", err)
	}
	<-ch
}

// TestKeyringReplace: a replaced set takes effect for the next handshake; a
// bad set (the same key twice, nothing) is refused and the old set stays.
func TestKeyringReplace(t *testing.T) {
	a, b, c := keys.MustGenerate(), keys.MustGenerate(), keys.MustGenerate()
	scfg := ringConfig(t, RoleClient, []NamedKey{{Name: "a", Key: a}, {Name: "b", Key: b}})
	kr := scfg.Keys
	idA, _ := DeriveKeyID(a, RoleClient)
	idB, _ := DeriveKeyID(b, RoleClient)
	if err := kr.Replace([]NamedKey{{Name: "a", Key: a}, {Name: "c", Key: a}}); err == nil ||
		!strings.Contains(err.Error(), `"a" and "c" have the same key`) {
		t.Errorf("duplicate key: err = %v", err)
	}
	if err := kr.Replace(nil); err == nil {
		t.Error("empty set accepted")
	}
	if !kr.Has(idA, "a") || !kr.Has(idB, "b") || kr.Len() != 2 {
		t.Fatal("a refused Replace changed the set")
	}
	// Rotation: b gets c as well, a goes.
	if err := kr.Replace([]NamedKey{{Name: "b", Key: b}, {Name: "b", Key: c}}); err != nil {
		t.Fatal(err)
	}
	if kr.Has(idA, "a") || !kr.Has(idB, "b") || kr.Has(idB, "a") {
		t.Error("Has does not follow Replace")
	}
	_, s := tcpPair(t, testConfig(c, RoleClient), scfg)
	if s.KeyName() != "b" {
		t.Errorf("rotated key's session is %q, want b", s.KeyName())
	}
	ln := listen(t)
	ch := serveOne(testContext(t), ln, scfg)
	if _, err := Dial(testContext(t), ln.Addr().String(), testConfig(a, RoleClient)); !errors.Is(err, ErrAuth) {
		t.Errorf("removed key: err = %v, want ErrAuth", err)
	}
	<-ch
}

// TestVersionRefusal: a preamble of another version gets the server's
// version and nothing else; a client that reads such an answer says which
// versions differ.
func TestVersionRefusal(t *testing.T) {
	ln := listen(t)
	ch := serveOne(testContext(t), ln, testConfig(keys.MustGenerate(), RoleClient))
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(testTimeout))
	if _, err := raw.Write([]byte{'R', 'C', 'N', 0, 3, 1}); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(raw)
	if want := []byte{'R', 'C', 'N', 0, ProtocolVersion}; !bytes.Equal(got, want) {
		t.Errorf("server answered %q, want %q", got, want)
	}
	if res := <-ch; !errors.Is(res.err, ErrPreamble) || !strings.Contains(res.err.Error(), "protocol version 3, want 2") {
		t.Errorf("server error = %v", res.err)
	}

	// The client side, against a server of version 7.
	fake := listen(t)
	go func() {
		c, err := fake.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		var pre [PreambleSize + lengthSize + handshakeMessageSize]byte
		_, _ = io.ReadFull(c, pre[:])
		_, _ = c.Write([]byte{'R', 'C', 'N', 0, 7})
	}()
	_, err = Dial(testContext(t), fake.Addr().String(), testConfig(keys.MustGenerate(), RoleClient))
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "server speaks recon protocol version 7, this client version 2") {
		t.Errorf("client error = %v, want ErrVersion naming 7 and 2", err)
	}
}

// TestVersion1ClientIsServedToBeToldToUpgrade: a client of version 1 (six-
// byte preamble, version-1 PSK) holding the V1 key gets an authenticated
// session marked OldProtocol; with any other key it gets nothing.
func TestVersion1ClientIsServedToBeToldToUpgrade(t *testing.T) {
	shared, other := keys.MustGenerate(), keys.MustGenerate()
	scfg := ringConfig(t, RoleClient, []NamedKey{{Name: "default", Key: shared, V1: true}, {Name: "b", Key: other}})
	v1 := func(k keys.Key) (serverResult, error) {
		ln := listen(t)
		ch := serveOne(testContext(t), ln, scfg)
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(testTimeout))
		pre := []byte{'R', 'C', 'N', 0, 1, byte(RoleClient)}
		psk, _ := derivePSK(k, RoleClient, 1)
		hs, _ := newHandshakeState(&Config{Role: RoleClient}, true, psk, pre)
		msg, _, _, _ := hs.WriteMessage(nil, nil)
		out := binary.BigEndian.AppendUint16(append([]byte{}, pre...), uint16(len(msg)))
		if _, err := raw.Write(append(out, msg...)); err != nil {
			t.Fatal(err)
		}
		var in [lengthSize + handshakeMessageSize]byte
		if _, err := io.ReadFull(raw, in[:]); err != nil {
			return <-ch, err
		}
		_, send, _, err := hs.ReadMessage(nil, in[lengthSize:])
		if err != nil {
			t.Fatal(err)
		}
		hello, _ := appendRecord(nil, send, recordHello, nil)
		if _, err := raw.Write(hello); err != nil {
			t.Fatal(err)
		}
		return <-ch, nil
	}
	res, err := v1(shared)
	if err != nil || res.err != nil {
		t.Fatalf("version-1 client with SHARED_KEY: %v, server %v", err, res.err)
	}
	if !res.conn.OldProtocol() || res.conn.KeyName() != "default" {
		t.Errorf("OldProtocol %v, KeyName %q", res.conn.OldProtocol(), res.conn.KeyName())
	}
	res.conn.Close()
	if res, err := v1(other); err == nil || !errors.Is(res.err, ErrAuth) {
		t.Errorf("version-1 client with a keys-file key: client err %v, server err %v", err, res.err)
	}
}

// BenchmarkKeyLookup finds a key among 1, 1,000 and 100,000 keys, and
// misses: the time does not grow with the number of keys (one map lookup).
func BenchmarkKeyLookup(b *testing.B) {
	for _, n := range []int{1, 1000, 100_000} {
		ks := make([]NamedKey, n)
		for i := range ks {
			ks[i] = NamedKey{Name: fmt.Sprint("id-", i), Key: keys.MustGenerate()}
		}
		kr, err := NewKeyring(RoleClient, ks)
		if err != nil {
			b.Fatal(err)
		}
		ids := make([]KeyID, 1024)
		for i := range ids {
			ids[i], _ = DeriveKeyID(ks[(i*7919)%n].Key, RoleClient)
		}
		b.Run(fmt.Sprintf("known/n=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if kr.lookup(ids[i%len(ids)]).name == "" {
					b.Fatal("miss")
				}
			}
		})
		b.Run(fmt.Sprintf("unknown/n=%d", n), func(b *testing.B) {
			var id KeyID
			for i := 0; b.Loop(); i++ {
				binary.BigEndian.PutUint64(id[:], uint64(i))
				if kr.lookup(id).name != "" {
					b.Fatal("hit")
				}
			}
		})
	}
}

// BenchmarkServerHandshakeKeys is the whole server handshake with 1 and
// 1,000 keys in the keyring: the same time.
func BenchmarkServerHandshakeKeys(b *testing.B) {
	for _, n := range []int{1, 1000} {
		ks := make([]NamedKey, n)
		for i := range ks {
			ks[i] = NamedKey{Name: fmt.Sprint("id-", i), Key: keys.MustGenerate()}
		}
		scfg := ringConfig(b, RoleClient, ks)
		ccfg := testConfig(ks[n/2].Key, RoleClient)
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			for b.Loop() {
				a, s := memPipe()
				done := make(chan serverResult, 1)
				go func() {
					c, err := Server(testContext(b), s, scfg)
					done <- serverResult{conn: c, err: err}
				}()
				c, err := Client(testContext(b), a, ccfg)
				if err != nil {
					b.Fatal(err)
				}
				res := <-done
				if res.err != nil {
					b.Fatal(res.err)
				}
				c.Close()
				res.conn.Close()
			}
		})
	}
}
