package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// files announces one small file per name.
func files(names ...string) []protocol.FileInfo {
	var fs []protocol.FileInfo
	for _, n := range names {
		fs = append(fs, protocol.FileInfo{Name: n, Size: 1})
	}
	return fs
}

func manyOptions(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// refuseSubmission sends sub on a new raw connection and checks that it is
// refused with code want before anything is stored, and that the server
// serves a new connection afterwards.
func refuseSubmission(t *testing.T, ctx context.Context, s *servertest.Server, sub protocol.Submit, want protocol.Code) {
	t.Helper()
	inputsBefore := dirNames(t, s.Config.InputBaseDir)
	outputsBefore := dirNames(t, s.Config.OutputBaseDir)
	rc := rawClient(t, ctx, s)
	m, err := request(rc, protocol.TypeSubmit, sub)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	err = m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{})
	if err == nil {
		t.Fatalf("submission accepted (%d files), want code %s", len(sub.Files), want)
	}
	if !protocol.IsCode(err, want) {
		t.Fatalf("submission refused with %v, want code %s", err, want)
	}
	var pe *protocol.Error
	errors.As(err, &pe)
	if strings.Contains(pe.Message, s.Dir) {
		t.Errorf("error message %q shows a server path", pe.Message)
	}
	rc.Close()
	if diff := cmp.Diff(inputsBefore, dirNames(t, s.Config.InputBaseDir)); diff != "" {
		t.Errorf("inputs dir changed by a refused submission (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(outputsBefore, dirNames(t, s.Config.OutputBaseDir)); diff != "" {
		t.Errorf("outputs dir changed by a refused submission (-before +after):\n%s", diff)
	}
	if inc := incoming(t, s); len(inc) != 0 {
		t.Errorf("upload dirs left: %v", inc)
	}
	checkServes(t, ctx, s)
}

// TestHostileSubmissions checks that invalid announcements are refused with
// the right code before any byte is stored.
func TestHostileSubmissions(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{
		"MAX_FILES_PER_JOB":   "3",
		"MAX_JOB_INPUT_BYTES": "100",
	}})
	tests := []struct {
		name string
		sub  protocol.Submit
		want protocol.Code
	}{
		{"parent", protocol.Submit{Files: files("../x")}, protocol.CodeInvalidName},
		{"dotdot", protocol.Submit{Files: files("..")}, protocol.CodeInvalidName},
		{"dot", protocol.Submit{Files: files(".")}, protocol.CodeInvalidName},
		{"empty name", protocol.Submit{Files: files("")}, protocol.CodeInvalidName},
		{"absolute", protocol.Submit{Files: files("/abs")}, protocol.CodeInvalidName},
		{"slash", protocol.Submit{Files: files("a/b")}, protocol.CodeInvalidName},
		{"backslash", protocol.Submit{Files: files(`a\b`)}, protocol.CodeInvalidName},
		{"colon", protocol.Submit{Files: files("c:x")}, protocol.CodeInvalidName},
		{"device", protocol.Submit{Files: files("NUL")}, protocol.CodeInvalidName},
		{"device with extension", protocol.Submit{Files: files("con.txt")}, protocol.CodeInvalidName},
		{"control character", protocol.Submit{Files: files("a\x07b")}, protocol.CodeInvalidName},
		{"newline", protocol.Submit{Files: files("a\nb")}, protocol.CodeInvalidName},
		{"NUL byte", protocol.Submit{Files: files("a\x00b")}, protocol.CodeInvalidName},
		{"bidi override", protocol.Submit{Files: files("scan\u202egpj.7")}, protocol.CodeInvalidName},
		{"300 bytes", protocol.Submit{Files: files(strings.Repeat("a", 300))}, protocol.CodeInvalidName},
		{"duplicate", protocol.Submit{Files: files("a.7", "a.7")}, protocol.CodeInvalidName},
		{"duplicate in another case", protocol.Submit{Files: files("Scan.7", "sCAN.7")}, protocol.CodeInvalidName},
		{"duplicate after Unicode normalisation", protocol.Submit{Files: files("caf\u00e9.7", "cafe\u0301.7")}, protocol.CodeInvalidName},
		{"duplicate after case folding and normalisation", protocol.Submit{Files: files("CAF\u00c9.7", "cafe\u0301.7")}, protocol.CodeInvalidName},
		{"duplicate after compatibility folding", protocol.Submit{Files: files("\ufb01le.7", "file.7")}, protocol.CodeInvalidName},
		{"too many files", protocol.Submit{Files: files("a", "b", "c", "d")}, protocol.CodeTooLarge},
		{"too many bytes", protocol.Submit{Files: []protocol.FileInfo{{Name: "a", Size: 60}, {Name: "b", Size: 41}}}, protocol.CodeTooLarge},
		{"huge file", protocol.Submit{Files: []protocol.FileInfo{{Name: "a", Size: 1 << 62}}}, protocol.CodeTooLarge},
		{"sizes overflow", protocol.Submit{Files: []protocol.FileInfo{{Name: "a", Size: 1<<63 - 1}, {Name: "b", Size: 1<<63 - 1}}}, protocol.CodeTooLarge},
		{"negative size", protocol.Submit{Files: []protocol.FileInfo{{Name: "a", Size: -1}}}, protocol.CodeBadRequest},
		{"no files", protocol.Submit{}, protocol.CodeBadRequest},
		{"65 options", protocol.Submit{Files: files("a"), Options: manyOptions(65)}, protocol.CodeBadRequest},
		{"4097-byte value", protocol.Submit{Files: files("a"), Options: map[string]string{"k": strings.Repeat("v", 4097)}}, protocol.CodeBadRequest},
		{"key a-b", protocol.Submit{Files: files("a"), Options: map[string]string{"a-b": "v"}}, protocol.CodeBadRequest},
		{"empty key", protocol.Submit{Files: files("a"), Options: map[string]string{"": "v"}}, protocol.CodeBadRequest},
		{"key with =", protocol.Submit{Files: files("a"), Options: map[string]string{"A=B": "v"}}, protocol.CodeBadRequest},
		{"65-byte key", protocol.Submit{Files: files("a"), Options: map[string]string{strings.Repeat("K", 65): "v"}}, protocol.CodeBadRequest},
		{"keys differing in case", protocol.Submit{Files: files("a"), Options: map[string]string{"key": "1", "KEY": "2"}}, protocol.CodeBadRequest},
		{"NUL in value", protocol.Submit{Files: files("a"), Options: map[string]string{"k": "a\x00b"}}, protocol.CodeBadRequest},
		{"bad submission id", protocol.Submit{Files: files("a"), SubmissionID: "../x"}, protocol.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refuseSubmission(t, ctx, s, tt.sub, tt.want)
		})
	}

	// The limits are inclusive: exactly MAX_FILES_PER_JOB files of exactly
	// MAX_JOB_INPUT_BYTES bytes pass, and a normal submission works.
	c := s.Dial(t)
	dir := t.TempDir()
	paths := []string{
		writeInput(t, dir, "a.7", randomBytes(t, 50)),
		writeInput(t, dir, "b.7", randomBytes(t, 49)),
		writeInput(t, dir, "c.7", randomBytes(t, 1)),
	}
	j, err := c.Submit(ctx, paths, &client.SubmitOptions{Options: manyOptions(64)})
	if err != nil {
		t.Fatalf("submission at the limits: %v", err)
	}
	if j := waitDone(t, ctx, c, j.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}

// TestRefusedForNoSpace checks MIN_FREE_DISK_MB.
func TestRefusedForNoSpace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"MIN_FREE_DISK_MB": "100000000"}})
	refuseSubmission(t, ctx, s, protocol.Submit{Files: files("a.7")}, protocol.CodeNoSpace)
	refuseSubmission(t, ctx, s, protocol.Submit{Files: []protocol.FileInfo{{Name: "empty.7"}}}, protocol.CodeNoSpace)
}

// TestRefusedForFullQueue checks MAX_QUEUED_JOBS, and that the queue takes
// a job again once there is room.
func TestRefusedForFullQueue(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	sig := t.TempDir()
	s := servertest.Start(t, servertest.Options{
		Script: releaseScript(sig),
		Extra:  map[string]string{"MAX_QUEUED_JOBS": "1", "MAX_CONCURRENT_JOBS": "1"},
	})
	c := s.Dial(t)
	a := submitOne(t, ctx, c, "A.7", []byte("a")).JobID
	waitJob(t, ctx, c, a, "running", func(j *client.Job) bool { return j.State == "running" })
	b := submitOne(t, ctx, c, "B.7", []byte("b")).JobID

	refuseSubmission(t, ctx, s, protocol.Submit{Files: files("C.7")}, protocol.CodeQueueFull)
	p := writeInput(t, t.TempDir(), "C.7", []byte("c"))
	if _, err := c.Submit(ctx, []string{p}, nil); !client.IsCode(err, client.CodeQueueFull) {
		t.Fatalf("Submit to a full queue: %v, want code queue_full", err)
	}

	release(t, sig, a)
	waitJob(t, ctx, c, b, "running", func(j *client.Job) bool { return j.State == "running" })
	cj, err := c.Submit(ctx, []string{p}, nil)
	if err != nil {
		t.Fatalf("Submit once the queue has room: %v", err)
	}
	release(t, sig, "all")
	for _, id := range []string{a, b, cj.JobID} {
		if j := waitDone(t, ctx, c, id); j.State != "succeeded" {
			t.Errorf("job %s ended %s (%s)", id, j.State, j.Error)
		}
	}
}

// TestHashMismatch sends the announced bytes with a wrong SHA-256.
func TestHashMismatch(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	rc := rawClient(t, ctx, s)
	data := []byte("0123456789")
	m, err := request(rc, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "a.7", Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
		t.Fatalf("submit refused: %v", err)
	}
	if _, err := rc.Write(data); err != nil {
		t.Fatal(err)
	}
	m, err = request(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sha256Hex([]byte("9876543210"))})
	if err != nil {
		t.Fatalf("reading the answer to a bad hash: %v", err)
	}
	if err := m.Decode(protocol.TypeJob, &protocol.JobInfo{}); !protocol.IsCode(err, protocol.CodeHashMismatch) {
		t.Fatalf("answer to a bad hash: %v, want code hash_mismatch", err)
	}
	// The session ends: the stream cannot be trusted to be in step.
	rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := protocol.ReadMessage(rc); err == nil {
		t.Errorf("session goes on after a hash mismatch")
	}
	if names := dirNames(t, s.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir holds %v after a hash mismatch", names)
	}
	checkNoJobs(t, ctx, s)
}

// TestTruncatedUpload sends fewer bytes than announced and hangs up.
func TestTruncatedUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	for _, closeWrite := range []bool{false, true} {
		rc := rawClient(t, ctx, s)
		m, err := request(rc, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "a.7", Size: 10}, {Name: "b.7", Size: 5}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
			t.Fatalf("submit refused: %v", err)
		}
		if inc := incoming(t, s); len(inc) != 1 {
			t.Fatalf("upload dirs during the upload: %v, want one", inc)
		}
		if _, err := rc.Write([]byte("01234")); err != nil {
			t.Fatal(err)
		}
		if closeWrite {
			rc.CloseWrite() // a clean end of stream, mid-file
		}
		rc.Close()
		servertest.Eventually(t, pollTimeout, "the upload dir is removed", func() bool {
			return len(incoming(t, s)) == 0
		})
	}
	if names := dirNames(t, s.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir holds %v after broken uploads", names)
	}
	checkNoJobs(t, ctx, s)
}

func checkNoJobs(t *testing.T, ctx context.Context, s *servertest.Server) {
	t.Helper()
	c := s.Dial(t)
	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 0 {
		t.Errorf("queue holds %d jobs, want none", len(q))
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for state, n := range st.Jobs {
		if n != 0 {
			t.Errorf("status counts %d %s jobs, want none", n, state)
		}
	}
}

// TestWrongKeys checks that a connection with the wrong key or for the
// wrong role fails at the handshake, and the right ones work.
func TestWrongKeys(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	clientKey, adminKey := mustKey(t, s.Key), mustKey(t, s.AdminKey)

	cfg := s.ClientConfig()
	cfg.Key = keys.MustGenerate().Encode()
	if _, err := client.Dial(ctx, cfg); !errors.Is(err, client.ErrAuth) {
		t.Errorf("client.Dial with another key: %v, want ErrAuth", err)
	}
	cfg.Key = s.AdminKey
	if _, err := client.Dial(ctx, cfg); !errors.Is(err, client.ErrAuth) {
		t.Errorf("client.Dial with the admin key: %v, want ErrAuth", err)
	}

	tests := []struct {
		name string
		addr string
		key  keys.Key
		role secure.Role
		ok   bool
	}{
		{"client key on the admin port", s.AdminAddr().String(), clientKey, secure.RoleAdmin, false},
		{"client role on the admin port", s.AdminAddr().String(), clientKey, secure.RoleClient, false},
		{"client role and admin key on the admin port", s.AdminAddr().String(), adminKey, secure.RoleClient, false},
		{"admin role on the client port", s.Addr().String(), adminKey, secure.RoleAdmin, false},
		{"admin role and client key on the client port", s.Addr().String(), clientKey, secure.RoleAdmin, false},
		{"relay-admin role on the admin port", s.AdminAddr().String(), adminKey, secure.RoleRelayAdmin, false},
		{"admin", s.AdminAddr().String(), adminKey, secure.RoleAdmin, true},
		{"client", s.Addr().String(), clientKey, secure.RoleClient, true},
	}
	for _, tt := range tests {
		c, err := rawDial(ctx, tt.addr, "", tt.key, tt.role)
		if !tt.ok {
			if err == nil {
				c.Close()
				t.Errorf("%s: handshake succeeded", tt.name)
			} else if !errors.Is(err, secure.ErrAuth) {
				t.Errorf("%s: %v, want ErrAuth", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if _, err := rawStatus(c); err != nil {
			t.Errorf("%s: status: %v", tt.name, err)
		}
		c.Close()
	}
}

// TestTrustedIPs checks that an address outside TRUSTED_IPS is refused
// while an allowed one is served.
func TestTrustedIPs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"TRUSTED_IPS": "127.0.0.2"}})
	key := mustKey(t, s.Key)
	if _, err := client.Dial(ctx, s.ClientConfig()); err == nil {
		t.Errorf("a client from 127.0.0.1 was accepted")
	} else if !errors.Is(err, client.ErrAuth) {
		t.Logf("refused 127.0.0.1 with %v", err)
	}
	if c, err := rawDial(ctx, s.Addr().String(), "127.0.0.3", key, secure.RoleClient); err == nil {
		c.Close()
		t.Errorf("a client from 127.0.0.3 was accepted")
	}
	c, err := rawDial(ctx, s.Addr().String(), "127.0.0.2", key, secure.RoleClient)
	if err != nil {
		t.Fatalf("a client from 127.0.0.2 was refused: %v", err)
	}
	defer c.Close()
	st, err := rawStatus(c)
	if err != nil {
		t.Fatalf("status from 127.0.0.2: %v", err)
	}
	if st.Protocol != protocol.Version {
		t.Errorf("status protocol %d", st.Protocol)
	}
	// Refusing others did not disturb the allowed session.
	if _, err := client.Dial(ctx, s.ClientConfig()); err == nil {
		t.Errorf("a client from 127.0.0.1 was accepted")
	}
	if _, err := rawStatus(c); err != nil {
		t.Fatalf("second status from 127.0.0.2: %v", err)
	}
}

// expectHangUp reads from conn until the server closes it, and fails the
// test if that takes longer than d.
func expectHangUp(conn net.Conn, d time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue // the server never answers garbage, but be lenient
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("still open after %s", d)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return nil
		}
		return err
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && strings.Contains(oe.Err.Error(), "reset")
}

// TestGarbageAndIdlePeers checks that peers sending garbage, or nothing,
// are disconnected while a good client is served at the same time.
func TestGarbageAndIdlePeers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{
		HandshakeTimeout: 300 * time.Millisecond,
		IdleTimeout:      10 * time.Second,
	}})
	good := s.Dial(t)
	addr := s.Addr().String()

	var wg sync.WaitGroup
	var pending atomic.Int32
	errs := make(chan error, 64)
	peer := func(name, localIP string, payload []byte) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			errs <- fmt.Errorf("%s: dial: %v", name, err)
			return
		}
		pending.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pending.Add(-1)
			defer conn.Close()
			if payload != nil {
				conn.Write(payload)
			}
			if err := expectHangUp(conn, 5*time.Second); err != nil {
				errs <- fmt.Errorf("%s: %v", name, err)
			}
		}()
	}
	peer("garbage", "127.0.0.3", randomBytes(t, 4096))
	peer("garbage with a valid-looking length", "127.0.0.3", append([]byte("RCN\x00\x01\x01\x00\x30"), randomBytes(t, 48)...))
	peer("HTTP", "127.0.0.4", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Spread over four addresses, so that all get past the per-address cap
	// on connections in the handshake (listen.MaxUnauthConnsPerIP) and are ended
	// by the handshake timeout.
	for i := range 20 {
		peer(fmt.Sprintf("idle %d", i), fmt.Sprintf("127.0.1.%d", i%4+1), nil)
	}

	// While they hang, the good client is served, and a new client from
	// another address gets in.
	served := 0
	for pending.Load() > 0 && ctx.Err() == nil {
		if _, err := good.Status(ctx); err != nil {
			t.Fatalf("good client during the flood: %v", err)
		}
		served++
		if served == 1 {
			c, err := rawDial(ctx, addr, "127.0.0.2", mustKey(t, s.Key), secure.RoleClient)
			if err != nil {
				t.Fatalf("new client during the flood: %v", err)
			}
			if _, err := rawStatus(c); err != nil {
				t.Errorf("new client during the flood: %v", err)
			}
			c.Close()
		}
		time.Sleep(5 * time.Millisecond) // pace the polling, do not hog the CPU
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if served < 2 {
		t.Errorf("good client served %d times during the flood", served)
	}
	if _, err := good.Status(ctx); err != nil {
		t.Fatalf("good client after the flood: %v", err)
	}
	checkServes(t, ctx, s)
}

// TestBadRequestsCloseSession checks that protocol violations by an
// authenticated client get one error and end the session, and unknown
// requests too.
func TestBadRequestsCloseSession(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	tests := []struct {
		name string
		typ  protocol.Type
		body any
	}{
		{"unknown request", "rm_rf", protocol.Empty{}},
		{"unknown field", protocol.TypeStatus, map[string]any{"evil": 1}},
		{"wrong body type", protocol.TypeJobStatus, map[string]any{"job_id": 5}},
		{"ack outside fetch", protocol.TypeAck, protocol.JobRef{JobID: "x"}},
	}
	for _, tt := range tests {
		rc := rawClient(t, ctx, s)
		m, err := request(rc, tt.typ, tt.body)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if err := m.Decode(protocol.TypeStatusReply, nil); !protocol.IsCode(err, protocol.CodeBadRequest) {
			t.Errorf("%s: %v, want code bad_request", tt.name, err)
		}
		rc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := protocol.ReadMessage(rc); err == nil {
			t.Errorf("%s: session goes on", tt.name)
		}
		rc.Close()
	}
	checkServes(t, ctx, s)
}
