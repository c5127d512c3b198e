package server_test

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// scanners starts a server whose CLIENT_KEYS_FILE holds alice and bob
// (besides SHARED_KEY, identity default) and RELAY_SHARED_KEY; it returns
// the server and the keys by name ("relay" for the relay's).
func scanners(t *testing.T, extra map[string]string) (*servertest.Server, map[string]keys.Key) {
	t.Helper()
	dir := t.TempDir()
	ks := map[string]keys.Key{"alice": keys.MustGenerate(), "bob": keys.MustGenerate(), "relay": keys.MustGenerate()}
	body := fmt.Sprintf("alice = %s\nbob = %s\n", ks["alice"].Encode(), ks["bob"].Encode())
	if err := os.WriteFile(filepath.Join(dir, "clients.keys"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"CLIENT_KEYS_FILE": "clients.keys", "RELAY_SHARED_KEY": ks["relay"].Encode()}
	for k, v := range extra {
		opts[k] = v
	}
	s := servertest.Start(t, servertest.Options{Dir: dir, Extra: opts, Script: releaseScript(dir)})
	ks["default"] = mustKey(t, s.Key)
	return s, ks
}

func dialAs(t *testing.T, ctx context.Context, s *servertest.Server, k keys.Key) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, client.Config{Address: s.Addr().String(), Key: k.Encode()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sameError checks that err (about job id) is the error for a job that
// does not exist (unknownErr, about unknownID), word for word.
func sameError(t *testing.T, what string, err, unknownErr error, id string) {
	t.Helper()
	if err == nil || unknownErr == nil {
		t.Errorf("%s: err %v, for an unknown job %v; want both to fail", what, err, unknownErr)
		return
	}
	want := strings.ReplaceAll(unknownErr.Error(), unknownJob, id)
	if err.Error() != want || !client.IsCode(err, client.CodeNotFound) {
		t.Errorf("%s: %q, want %q as for a job that does not exist", what, err, want)
	}
}

const unknownJob = "aaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestOtherIdentityJobIsUnknownOnTheWire: status, wait, fetch and cancel of
// another identity's job, sent straight through the Go client, answer as
// for a job that does not exist; they leave it as it was, and its owner
// waits for it and fetches it.
func TestOtherIdentityJobIsUnknownOnTheWire(t *testing.T) {
	s, ks := scanners(t, nil)
	ctx := testContext(t)
	alice, bob := dialAs(t, ctx, s, ks["alice"]), dialAs(t, ctx, s, ks["bob"])
	j := submitOne(t, ctx, alice, "a.dat", []byte("alice's"))
	if j.Identity != "alice" {
		t.Errorf("job identity %q, want alice", j.Identity)
	}
	for _, step := range []string{"queued or running", "finished"} {
		if step == "finished" {
			release(t, s.Dir, j.JobID)
			waitDone(t, ctx, alice, j.JobID)
		}
		_, err := bob.Job(ctx, j.JobID)
		_, uerr := bob.Job(ctx, unknownJob)
		sameError(t, step+": Job", err, uerr, j.JobID)
		_, err = bob.Wait(ctx, j.JobID, nil)
		_, uerr = bob.Wait(ctx, unknownJob, nil)
		sameError(t, step+": Wait", err, uerr, j.JobID)
		_, _, err = bob.Fetch(ctx, j.JobID, t.TempDir(), nil)
		_, _, uerr = bob.Fetch(ctx, unknownJob, t.TempDir(), nil)
		sameError(t, step+": Fetch", err, uerr, j.JobID)
		_, err = bob.Cancel(ctx, j.JobID)
		_, uerr = bob.Cancel(ctx, unknownJob)
		sameError(t, step+": Cancel", err, uerr, j.JobID)
		if q, err := bob.Queue(ctx); err != nil || len(q) != 0 {
			t.Errorf("%s: bob's queue = %v, %v; want empty", step, q, err)
		}
	}
	out := t.TempDir()
	got, files, err := alice.Fetch(ctx, j.JobID, out, nil)
	if err != nil || got.State != client.StateSucceeded || len(files) != 1 {
		t.Fatalf("alice fetches her job: %v, %v, %v", got, files, err)
	}
}

// TestSubmissionIDIsPerIdentity: bob submitting with alice's submission id
// gets a job of his own, not alice's.
func TestSubmissionIDIsPerIdentity(t *testing.T) {
	s, ks := scanners(t, map[string]string{"UPLOAD_RESUME_HOURS": "1"})
	ctx := testContext(t)
	alice, bob := dialAs(t, ctx, s, ks["alice"]), dialAs(t, ctx, s, ks["bob"])
	p := writeInput(t, t.TempDir(), "x.dat", []byte("same file"))
	ja, err := alice.Submit(ctx, []string{p}, &client.SubmitOptions{SubmissionID: "scan-0001"})
	if err != nil {
		t.Fatal(err)
	}
	jb, err := bob.Submit(ctx, []string{p}, &client.SubmitOptions{SubmissionID: "scan-0001"})
	if err != nil {
		t.Fatal(err)
	}
	if ja.JobID == jb.JobID || jb.Identity != "bob" {
		t.Errorf("bob's submission with alice's id got job %s (%s); alice's is %s", jb.JobID, jb.Identity, ja.JobID)
	}
	again, err := alice.Submit(ctx, []string{p}, &client.SubmitOptions{SubmissionID: "scan-0001"})
	if err != nil || again.JobID != ja.JobID {
		t.Errorf("alice's retry got %v, %v; want her job %s", again, err, ja.JobID)
	}
}

// TestActAsOnlyFromTheRelayKey: a client session cannot name an identity
// (the session ends); a RELAY_SHARED_KEY session names one once, before
// anything else, and then sees exactly that identity's jobs.
func TestActAsOnlyFromTheRelayKey(t *testing.T) {
	s, ks := scanners(t, nil)
	ctx := testContext(t)
	alice := dialAs(t, ctx, s, ks["alice"])
	ja := submitOne(t, ctx, alice, "a.dat", []byte("alice's"))

	// bob tries to act as alice.
	rc, err := rawDial(ctx, s.Addr().String(), "", ks["bob"], secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := protocol.WriteMessage(rc, protocol.TypeActAs, protocol.ActAs{Identity: "alice"}); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc); code != protocol.CodeBadRequest {
		t.Errorf("act_as from a client key: %s, want bad_request", code)
	}
	expectSessionEnd(t, rc)

	// The relay's key: status says it may; nothing about jobs before act_as.
	relay := func() *secure.Conn {
		c, err := rawDial(ctx, s.Addr().String(), "", ks["relay"], secure.RoleClient)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	rc = relay()
	if st, err := rawStatus(rc); err != nil || !st.RelaySession {
		t.Errorf("relay session status: %+v, %v; want relay_session", st, err)
	}
	if err := protocol.WriteMessage(rc, protocol.TypeQueue, protocol.Empty{}); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc); code != protocol.CodeBadRequest {
		t.Errorf("queue on a relay session before act_as: %s, want bad_request", code)
	}
	rc = relay()
	if err := protocol.WriteMessage(rc, protocol.TypeActAs, protocol.ActAs{Identity: "alice"}); err != nil {
		t.Fatal(err)
	}
	m, err := request(rc, protocol.TypeJobStatus, protocol.JobRef{JobID: ja.JobID})
	var j protocol.JobInfo
	if err != nil || m.Decode(protocol.TypeJob, &j) != nil || j.JobID != ja.JobID {
		t.Errorf("relay acting for alice does not see her job: %v %+v", err, j)
	}
	if err := protocol.WriteMessage(rc, protocol.TypeActAs, protocol.ActAs{Identity: "bob"}); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc); code != protocol.CodeBadRequest {
		t.Errorf("second act_as: %s, want bad_request", code)
	}
	expectSessionEnd(t, rc)
	rc = relay()
	if err := protocol.WriteMessage(rc, protocol.TypeActAs, protocol.ActAs{Identity: "bob"}); err != nil {
		t.Fatal(err)
	}
	m, err = request(rc, protocol.TypeJobStatus, protocol.JobRef{JobID: ja.JobID})
	if err != nil || !protocol.IsCode(m.Decode(protocol.TypeJob, &j), protocol.CodeNotFound) {
		t.Errorf("relay acting for bob sees alice's job: %v", err)
	}

	// An identity the server does not have is refused.
	rc2 := relay()
	if err := protocol.WriteMessage(rc2, protocol.TypeActAs, protocol.ActAs{Identity: "carol"}); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc2); code != protocol.CodeBadRequest {
		t.Errorf("act_as for an unknown identity: %s, want bad_request", code)
	}
	expectSessionEnd(t, rc2)

	// bob removed from the server's file: the relay's session acting for
	// him is closed by the reload; alice's client session stays.
	body := fmt.Sprintf("alice = %s\n", ks["alice"].Encode())
	if err := os.WriteFile(filepath.Join(s.Dir, "clients.keys"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := s.ReloadClientKeys()
	if err != nil || len(rep.Removed) != 1 || rep.Removed[0] != "bob" || rep.ClosedSessions != 1 {
		t.Fatalf("reload without bob: %+v, %v; want bob removed and the relay's session for him closed", rep, err)
	}
	expectSessionEnd(t, rc)
	if _, err := alice.Job(ctx, ja.JobID); err != nil {
		t.Errorf("alice's session after bob's removal: %v", err)
	}
}

// TestVersion1ClientToldToUpgrade: a client of protocol version 1 (the
// prototype's recon, SHARED_KEY) is answered that the server speaks
// version 2 and it must upgrade.
func TestVersion1ClientToldToUpgrade(t *testing.T) {
	s, ks := scanners(t, nil)
	ctx := testContext(t)
	msg := version1Request(t, ctx, s.Addr().String(), ks["default"])
	for _, want := range []string{"recon protocol version 2", "no longer serves version 1", "upgrade recon"} {
		if !strings.Contains(msg, want) {
			t.Errorf("answer to a version-1 client: %q, want it to say %q", msg, want)
		}
	}
}

// version1Request speaks protocol version 1 as the prototype's client did
// (six-byte preamble, "recon/1 psk client"), sends a status request and
// returns the message of the error it gets.
func version1Request(t *testing.T, ctx context.Context, addr string, k keys.Key) string {
	t.Helper()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(pollTimeout))
	pre := []byte{'R', 'C', 'N', 0, 1, 1}
	psk, err := hkdf.Key(sha256.New, k.Bytes(), nil, "recon/1 psk client", 32)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256),
		Pattern:     noise.HandshakeNN, Initiator: true, Prologue: pre, PresharedKey: psk,
	})
	if err != nil {
		t.Fatal(err)
	}
	first, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.BigEndian.AppendUint16(append([]byte{}, pre...), uint16(len(first)))
	if _, err := conn.Write(append(out, first...)); err != nil {
		t.Fatal(err)
	}
	var in [2 + 48]byte
	if _, err := io.ReadFull(conn, in[:]); err != nil {
		t.Fatalf("the server does not answer a version-1 handshake: %v", err)
	}
	_, send, recv, err := hs.ReadMessage(nil, in[2:])
	if err != nil {
		t.Fatal(err)
	}
	record := func(typ byte, payload []byte) []byte {
		ct, err := send.Encrypt(nil, nil, append([]byte{typ}, payload...))
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(ct))), ct...)
	}
	req := `{"type":"status"}`
	frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(req))), req...)
	if _, err := conn.Write(append(record(3, nil), record(1, frame)...)); err != nil {
		t.Fatal(err)
	}
	var n [2]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		t.Fatalf("no answer to a version-1 request: %v", err)
	}
	ct := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(conn, ct); err != nil {
		t.Fatal(err)
	}
	pt, err := recv.Decrypt(nil, nil, ct)
	if err != nil || len(pt) < 5 || pt[0] != 1 {
		t.Fatalf("answer record: %v %q", err, pt)
	}
	m, err := protocol.ReadMessage(strings.NewReader(string(pt[1:])))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Decode(protocol.TypeStatusReply, nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("answer to a version-1 request: %v, want an error", err)
	}
	return pe.Message
}

// TestQueueSharePerIdentity: with MAX_QUEUED_JOBS_PER_CLIENT = 2, a
// scanner with two jobs waiting is refused a third (queue_full, naming the
// key) while another scanner still gets in.
func TestQueueSharePerIdentity(t *testing.T) {
	s, ks := scanners(t, map[string]string{"MAX_QUEUED_JOBS_PER_CLIENT": "2", "MAX_CONCURRENT_JOBS": "1"})
	ctx := testContext(t)
	alice, bob := dialAs(t, ctx, s, ks["alice"]), dialAs(t, ctx, s, ks["bob"])
	first := submitOne(t, ctx, alice, "a0.dat", []byte("runs"))
	waitJob(t, ctx, alice, first.JobID, "running", func(j *client.Job) bool { return j.State == client.StateRunning })
	submitOne(t, ctx, alice, "a1.dat", []byte("waits"))
	submitOne(t, ctx, alice, "a2.dat", []byte("waits too"))
	p := writeInput(t, t.TempDir(), "a3.dat", []byte("one too many"))
	_, err := alice.Submit(ctx, []string{p}, &client.SubmitOptions{Reconnects: -1})
	if !client.IsCode(err, client.CodeQueueFull) || !strings.Contains(err.Error(), "MAX_QUEUED_JOBS_PER_CLIENT = 2") {
		t.Errorf("alice's third waiting job: %v, want queue_full over MAX_QUEUED_JOBS_PER_CLIENT", err)
	}
	if j := submitOne(t, ctx, bob, "b.dat", []byte("bob's")); j.Identity != "bob" {
		t.Errorf("bob's job: %+v", j)
	}
	release(t, s.Dir, "all")
}

// TestReservationSharedByIdentity: the disk an identity's uploads hold is
// counted per identity, wherever its sessions come from: the same key
// from two addresses shares one MAX_RESERVED_BYTES_PER_CLIENT.
func TestReservationSharedByIdentity(t *testing.T) {
	s, ks := scanners(t, map[string]string{"MAX_RESERVED_BYTES_PER_CLIENT": "10MiB"})
	ctx := testContext(t)
	c1, err := rawDial(ctx, s.Addr().String(), "127.0.0.1", ks["alice"], secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	startUpload(t, c1, protocol.FileInfo{Name: "big.7", Size: 8 << 20})
	c2, err := rawDial(ctx, s.Addr().String(), "127.0.0.2", ks["alice"], secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	m, err := request(c2, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "more.7", Size: 4 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, nil); !protocol.IsCode(err, protocol.CodeNoSpace) || !strings.Contains(err.Error(), "(alice)") {
		t.Errorf("alice's second upload from another address: %v, want no_space over her share", err)
	}
	c3, err := rawDial(ctx, s.Addr().String(), "127.0.0.1", ks["bob"], secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	startUpload(t, c3, protocol.FileInfo{Name: "bob.7", Size: 4 << 20})
}
