package server_test

// The hardening catalogue's server cases (docs/SECURITY.md): connections,
// control messages, uploads and results, each against a real server on
// loopback.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/listen"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// dialFrom opens a plain TCP connection to addr from the loopback address ip.
func dialFrom(ctx context.Context, addr, ip string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// refusedQuickly reports whether the server closes conn within d, without
// a byte: what it does to a connection over a cap.
func refusedQuickly(conn net.Conn, d time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := conn.Read(make([]byte, 1))
	switch {
	case n > 0:
		return errors.New("the server sent data")
	case errors.Is(err, io.EOF) || isReset(err):
		return nil
	}
	return fmt.Errorf("not closed within %v: %v", d, err)
}

// wireError reads one message from c and returns its wire error code.
func wireError(t *testing.T, c *secure.Conn) protocol.Code {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(pollTimeout))
	defer c.SetReadDeadline(time.Time{})
	m, err := protocol.ReadMessage(c)
	if err != nil {
		t.Fatalf("reading the server's answer: %v", err)
	}
	err = m.Decode(protocol.TypeJob, nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("server answered %q (%v), want an error", m.Type, err)
	}
	return pe.Code
}

// expectSessionEnd checks that the server ends the session (no further
// message) within pollTimeout.
func expectSessionEnd(t *testing.T, c *secure.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(pollTimeout))
	m, err := protocol.ReadMessage(c)
	if err == nil {
		t.Fatalf("session goes on: got %q", m.Type)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("session still open after %v", pollTimeout)
	}
}

// startUpload announces files on a raw connection and checks the server is
// ready for them.
func startUpload(t *testing.T, rc *secure.Conn, files ...protocol.FileInfo) {
	t.Helper()
	m, err := request(rc, protocol.TypeSubmit, protocol.Submit{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, &protocol.SubmitReady{}); err != nil {
		t.Fatalf("submission refused: %v", err)
	}
}

// checkNothingStored checks that no job and no upload directory exist.
func checkNothingStored(t *testing.T, ctx context.Context, s *servertest.Server) {
	t.Helper()
	servertest.Eventually(t, pollTimeout, "the upload dir is removed", func() bool { return len(incoming(t, s)) == 0 })
	if names := dirNames(t, s.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir holds %v", names)
	}
	checkNoJobs(t, ctx, s)
}

// TestConnectionFlood fills the caps on connections from 127.0.0.1 (in the
// handshake, per address; then in all, globally; then authenticated, per
// address): over the per-address cap in the handshake a new connection
// evicts the oldest (closed at once, without a word), so a client with the
// key from the flooding address still gets in; over the global cap in the
// handshake it evicts the oldest of the busiest address, so a client from a
// fresh address gets in; over the cap on sessions the new connection is
// closed at once. A session from 127.0.0.2 is served
// throughout, a new client from 127.0.0.2 gets in while only one address is
// over its cap, and once the flood ends 127.0.0.1 is served again.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// A long handshake timeout: a connection closed quickly was refused,
	// not timed out.
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: 30 * time.Second}})
	addr := s.Addr().String()
	key := mustKey(t, s.Key)
	good, err := rawDial(ctx, addr, "127.0.0.2", key, secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	served := func(what string) {
		t.Helper()
		if _, err := rawStatus(good); err != nil {
			t.Fatalf("%s: the session from 127.0.0.2 is not served: %v", what, err)
		}
	}
	newClientFrom := func(ip string) error {
		c, err := rawDial(ctx, addr, ip, key, secure.RoleClient)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = rawStatus(c)
		return err
	}
	var flood []net.Conn
	closeFlood := func() {
		for _, c := range flood {
			c.Close()
		}
		flood = nil
	}
	defer closeFlood()
	open := func(ip string, n int) {
		t.Helper()
		for range n {
			c, err := dialFrom(ctx, addr, ip)
			if err != nil {
				t.Fatalf("flood from %s: %v", ip, err)
			}
			flood = append(flood, c)
		}
	}

	// 1. Connections that never start the handshake, from one address:
	// the next one evicts the oldest, and a client with the key gets in.
	open("127.0.0.1", listen.MaxUnauthConnsPerIP)
	over, err := dialFrom(ctx, addr, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := refusedQuickly(flood[0], 10*time.Second); err != nil {
		t.Errorf("the oldest connection in the handshake from 127.0.0.1, after connection %d: %v", listen.MaxUnauthConnsPerIP+1, err)
	}
	flood = append(flood, over)
	if err := newClientFrom("127.0.0.1"); err != nil {
		t.Errorf("a client with the key from 127.0.0.1 during its flood: %v", err)
	}
	served("per-address flood")
	if err := newClientFrom("127.0.0.2"); err != nil {
		t.Errorf("a new client from 127.0.0.2 during the per-address flood: %v", err)
	}
	closeFlood()
	servertest.Eventually(t, pollTimeout, "127.0.0.1 served again", func() bool { return newClientFrom("127.0.0.1") == nil })

	// 2. Connections in the handshake from many addresses, up to the
	// global cap: a new one evicts the oldest of the address holding the
	// most, so a client with the key from a fresh address gets in.
	for i := range listen.MaxUnauthConns / listen.MaxUnauthConnsPerIP {
		open(fmt.Sprintf("127.0.1.%d", i+1), listen.MaxUnauthConnsPerIP)
	}
	if err := newClientFrom("127.0.2.1"); err != nil {
		t.Errorf("a client with the key from 127.0.2.1 during the global flood: %v", err)
	}
	served("global flood") // authenticated before the flood
	closeFlood()
	servertest.Eventually(t, pollTimeout, "new clients served again", func() bool {
		return newClientFrom("127.0.0.2") == nil && newClientFrom("127.0.0.1") == nil
	})

	// 3. Authenticated sessions from one address, up to its cap.
	var sessions []*secure.Conn
	defer func() {
		for _, c := range sessions {
			c.Close()
		}
	}()
	for range listen.MaxConnsPerIP {
		c, err := rawDial(ctx, addr, "127.0.0.3", key, secure.RoleClient)
		if err != nil {
			t.Fatalf("session %d from 127.0.0.3: %v", len(sessions)+1, err)
		}
		sessions = append(sessions, c)
	}
	if err := newClientFrom("127.0.0.3"); !errors.Is(err, secure.ErrAuth) {
		t.Errorf("session %d from 127.0.0.3: %v, want refused (ErrAuth)", listen.MaxConnsPerIP+1, err)
	}
	served("authenticated flood")
	if err := newClientFrom("127.0.0.2"); err != nil {
		t.Errorf("a new client from 127.0.0.2 during the authenticated flood: %v", err)
	}
	if _, err := rawStatus(sessions[0]); err != nil {
		t.Errorf("a flooding session is not served: %v", err)
	}
	for _, c := range sessions {
		c.Close()
	}
	sessions = nil
	servertest.Eventually(t, pollTimeout, "127.0.0.3 served again", func() bool { return newClientFrom("127.0.0.3") == nil })
	served("after the floods")
}

// TestSlowHandshake sends the handshake a byte at a time: the handshake
// timeout ends it, and a client from another address is served meanwhile.
func TestSlowHandshake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const timeout = time.Second
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: timeout}})
	conn, err := dialFrom(ctx, s.Addr().String(), "127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		preamble := []byte("RCN\x00\x01\x01\x00\x30")
		for i := 0; ; i++ {
			if _, err := conn.Write([]byte{preamble[i%len(preamble)]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	c, err := rawDial(ctx, s.Addr().String(), "127.0.0.2", mustKey(t, s.Key), secure.RoleClient)
	if err != nil {
		t.Fatalf("a client during the slow handshake: %v", err)
	}
	if _, err := rawStatus(c); err != nil {
		t.Errorf("a client during the slow handshake: %v", err)
	}
	c.Close()
	err = expectHangUp(conn, 10*time.Second)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("slow handshake: %v", err)
	}
	if d := time.Since(start); d < timeout/2 || d > timeout+5*time.Second {
		t.Errorf("slow handshake ended after %v, want about the handshake timeout (%v)", d, timeout)
	}
}

// TestHalfClosedHandshake sends the preamble and shuts its side: the
// server closes at once, without waiting for the handshake timeout.
func TestHalfClosedHandshake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: 30 * time.Second}})
	conn, err := dialFrom(ctx, s.Addr().String(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("RCN\x00\x01\x01"))
	conn.(*net.TCPConn).CloseWrite()
	if err := refusedQuickly(conn, 10*time.Second); err != nil {
		t.Errorf("half-closed handshake: %v", err)
	}
	checkServes(t, ctx, s)
}

// TestSlowUpload sends an announced file a byte every 20 ms, far below
// server.MinTransferRate: the upload fails with code timeout once the
// grace (the idle timeout) is spent, although no single wait reaches the
// idle timeout, and nothing is kept.
func TestSlowUpload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{IdleTimeout: time.Second}})
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "slow.7", Size: 100_000})
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := rc.Write([]byte{'x'}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	code := wireError(t, rc)
	close(stop)
	wg.Wait()
	if code != protocol.CodeTimeout {
		t.Errorf("slow upload ended with code %s, want timeout", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("slow upload cut after %v", d)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
	checkServes(t, ctx, s)
}

// TestVanishedUploader sends part of a file and then nothing, without
// closing (a peer that vanished, or a half-open connection): the upload
// fails with code timeout and nothing is kept.
func TestVanishedUploader(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{IdleTimeout: time.Second}})
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "big.7", Size: 1 << 20})
	if _, err := rc.Write(randomBytes(t, 1000)); err != nil {
		t.Fatal(err)
	}
	if code := wireError(t, rc); code != protocol.CodeTimeout {
		t.Errorf("vanished uploader: code %s, want timeout", code)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
}

// TestStalledResultReader asks for large results and stops reading after
// the manifest: the server ends the session once the client is slower
// than server.MinTransferRate for the grace, keeps the results, and a
// fetch afterwards gets them.
func TestStalledResultReader(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 64 << 20 // well over what the loopback buffers hold
	s := servertest.Start(t, servertest.Options{
		Script: fmt.Sprintf("#!/bin/sh\nhead -c %d /dev/zero > \"$3/big.dat\"\n", size),
		Server: server.Options{IdleTimeout: time.Second},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	rc := rawClient(t, ctx, s)
	m, err := request(rc, protocol.TypeFetch, protocol.JobRef{JobID: job.JobID})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeResults, &protocol.Results{}); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, pollTimeout, "the server gives up on the stalled reader", func() bool {
		b, _ := os.ReadFile(s.LogPath)
		return bytes.Contains(b, []byte("sending result failed"))
	})
	n, err := io.Copy(io.Discard, rc)
	if err == nil || n >= size {
		t.Errorf("stalled reader got %d of %d bytes and %v; want the stream cut", n, size, err)
	}
	// A new session: the first one sat idle longer than the idle timeout.
	_, files, err := s.Dial(t).Fetch(ctx, job.JobID, t.TempDir(), nil)
	if err != nil || len(files) != 1 || files[0].Size != size {
		t.Fatalf("fetch after the stalled one: %+v, %v", files, err)
	}
}

// rawFrame frames a control message payload as it travels: a 4-byte length
// and the bytes.
func rawFrame(payload string) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

// TestHostileControlMessagesOnTheWire sends malformed control messages on
// authenticated sessions: each gets a bad_request (or too_large) answer,
// then the session ends, no job is made and the server serves others.
func TestHostileControlMessagesOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	file := `{"name":"a.7","size":1}`
	tests := []struct {
		name string
		raw  []byte
		want protocol.Code
	}{
		{"malformed JSON", rawFrame(`{"type":"status","body":{`), protocol.CodeBadRequest},
		{"not JSON", rawFrame(`hello, server`), protocol.CodeBadRequest},
		{"no type", rawFrame(`{}`), protocol.CodeBadRequest},
		{"unknown envelope field", rawFrame(`{"type":"status","admin":true}`), protocol.CodeBadRequest},
		{"unknown body field", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"path":"/etc"}}`), protocol.CodeBadRequest},
		{"unknown file field", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1,"mode":"0777"}]}}`), protocol.CodeBadRequest},
		{"duplicate type", rawFrame(`{"type":"status","type":"submit","body":{"files":[` + file + `]}}`), protocol.CodeBadRequest},
		{"duplicate files", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"files":[{"name":"b.7","size":1}]}}`), protocol.CodeBadRequest},
		{"duplicate in another case", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"FILES":[{"name":"b.7","size":1}]}}`), protocol.CodeBadRequest},
		{"duplicate option", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"options":{"k":"1","k":"2"}}}`), protocol.CodeBadRequest},
		{"duplicate size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1,"size":1000000}]}}`), protocol.CodeBadRequest},
		{"huge number", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":1e400}]}}`), protocol.CodeBadRequest},
		{"number over int64", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":9223372036854775808}]}}`), protocol.CodeBadRequest},
		{"fractional size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":0.5}]}}`), protocol.CodeBadRequest},
		{"negative size", rawFrame(`{"type":"submit","body":{"files":[{"name":"a.7","size":-5}]}}`), protocol.CodeBadRequest},
		{"deep nesting", rawFrame(`{"type":"status","body":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `}`), protocol.CodeBadRequest},
		{"trailing message", rawFrame(`{"type":"status"}{"type":"queue"}`), protocol.CodeBadRequest},
		{"trailing garbage", rawFrame(`{"type":"status"} ;rm -rf /`), protocol.CodeBadRequest},
		{"type is a number", rawFrame(`{"type":5}`), protocol.CodeBadRequest},
		{"files is a string", rawFrame(`{"type":"submit","body":{"files":"a.7"}}`), protocol.CodeBadRequest},
		{"job id is a list", rawFrame(`{"type":"job_status","body":{"job_id":["x"]}}`), protocol.CodeBadRequest},
		{"options is a list", rawFrame(`{"type":"submit","body":{"files":[` + file + `],"options":["a=b"]}}`), protocol.CodeBadRequest},
		{"zero length", []byte{0, 0, 0, 0}, protocol.CodeBadRequest},
		{"length over the cap", binary.BigEndian.AppendUint32(nil, protocol.MaxMessageSize+1), protocol.CodeTooLarge},
		{"4 GiB length", []byte{0xff, 0xff, 0xff, 0xff}, protocol.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := rawClient(t, ctx, s)
			if _, err := rc.Write(tt.raw); err != nil {
				t.Fatal(err)
			}
			if code := wireError(t, rc); code != tt.want {
				t.Errorf("answer code %s, want %s", code, tt.want)
			}
			expectSessionEnd(t, rc)
		})
	}
	checkNothingStored(t, ctx, s)
	checkServes(t, ctx, s)
}

// TestMoreBytesThanAnnounced sends more bytes than the file's announced
// size: the surplus is read as the next control message, which is
// refused, and nothing is kept.
func TestMoreBytesThanAnnounced(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	rc := rawClient(t, ctx, s)
	data := []byte("0123456789")
	startUpload(t, rc, protocol.FileInfo{Name: "a.7", Size: 5})
	if _, err := rc.Write(data); err != nil {
		t.Fatal(err)
	}
	protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sha256Hex(data)})
	if code := wireError(t, rc); code != protocol.CodeTooLarge && code != protocol.CodeBadRequest {
		t.Errorf("surplus bytes: code %s, want too_large or bad_request", code)
	}
	expectSessionEnd(t, rc)
	checkNothingStored(t, ctx, s)
}

// TestEmptyFiles submits empty files beside a normal one: they are stored,
// passed to the script and returned like any other.
func TestEmptyFiles(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	c := s.Dial(t)
	dir := t.TempDir()
	paths := []string{
		writeInput(t, dir, "empty1.7", nil),
		writeInput(t, dir, "data.7", []byte("data")),
		writeInput(t, dir, "empty2.7", nil),
	}
	j, err := c.Submit(ctx, paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	emptySHA := sha256Hex(nil)
	for _, f := range j.Files {
		if strings.HasPrefix(f.Name, "empty") && (f.Size != 0 || f.SHA256 != emptySHA) {
			t.Errorf("empty file stored as %+v", f)
		}
	}
	if j := waitDone(t, ctx, c, j.JobID); j.State != "succeeded" || len(j.Results) != 3 {
		t.Fatalf("job ended %s with results %+v", j.State, j.Results)
	}
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, j.JobID, dst, nil)
	if err != nil || len(files) != 3 {
		t.Fatalf("fetch: %+v, %v", files, err)
	}
	for _, name := range []string{"empty1.7.out", "empty2.7.out"} {
		if fi, err := os.Stat(filepath.Join(dst, name)); err != nil || fi.Size() != 0 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends, or
// skips the test (it needs root, and a kernel that lets it mount).
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		servertest.SkipUnlessStrict(t, "skipped: mounting a small tmpfs needs root")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		servertest.SkipUnlessStrict(t, "skipped: cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// memDir returns a directory for a test server (config, data, inputs) on
// a tmpfs when the test runs as root, so that tests of many files measure
// recon rather than the disk; else a plain t.TempDir(), and in -short mode
// the test is skipped.
func memDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 && syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=512m,mode=0700") == nil {
		t.Cleanup(func() {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
		return dir
	}
	if testing.Short() {
		t.Skip("skipped in -short mode: many files on disk, without root for a tmpfs")
	}
	return dir
}

// TestTenThousandFiles submits one job of 10,000 small files (with
// MAX_FILES_PER_JOB raised): it is stored, run with every file, and its
// description - in the submit answer, job status, events, queue and result
// manifest - still fits in one message.
func TestTenThousandFiles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := memDir(t)
	const n = 10_000
	s := servertest.Start(t, servertest.Options{
		Dir: dir,
		// The script lists its inputs and hashes them together, in one
		// process: a copy per file would take longer than the upload.
		Script: "#!/bin/sh\nset -eu\ncd \"$1\"\nls | wc -l > \"$3/count\"\ncat * | sha256sum | cut -c1-64 > \"$3/sum\"\n",
		Extra:  map[string]string{"MAX_FILES_PER_JOB": fmt.Sprint(n)},
	})
	c := s.Dial(t)
	in := filepath.Join(dir, "client")
	if err := os.Mkdir(in, 0o700); err != nil {
		t.Fatal(err)
	}
	paths := make([]string, n)
	all := sha256.New()
	for i := range n {
		name := fmt.Sprintf("f%05d.7", i)
		all.Write([]byte(name))
		paths[i] = writeInput(t, in, name, []byte(name))
	}
	start := time.Now()
	job, err := c.Submit(ctx, paths, nil)
	if err != nil {
		t.Fatalf("submit %d files: %v", n, err)
	}
	t.Logf("%d files uploaded in %v", n, time.Since(start).Round(time.Millisecond))
	if len(job.Files) != n {
		t.Fatalf("job lists %d files, want %d", len(job.Files), n)
	}
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	if j, err := c.Job(ctx, job.JobID); err != nil || len(j.Files) != n {
		t.Fatalf("job status: %v", err)
	}
	if q, err := c.Queue(ctx); err != nil || len(q) != 1 {
		t.Fatalf("queue: %d jobs, %v", len(q), err)
	}
	dst := filepath.Join(dir, "results")
	if _, _, err := c.Fetch(ctx, job.JobID, dst, nil); err != nil {
		t.Fatal(err)
	}
	count, _ := os.ReadFile(filepath.Join(dst, "count"))
	sum, _ := os.ReadFile(filepath.Join(dst, "sum"))
	if strings.TrimSpace(string(count)) != fmt.Sprint(n) || strings.TrimSpace(string(sum)) != hex.EncodeToString(all.Sum(nil)) {
		t.Errorf("the script saw %q files with hash %q", count, sum)
	}
	waitGone(t, filepath.Join(s.Config.InputBaseDir, job.JobID), "the input dir")
}

// TestFileListTooLong announces 20,000 files with long names, within
// MAX_FILES_PER_JOB, whose list, with the hashes the server adds, would
// not fit in one message: refused with code too_large before anything is
// stored.
func TestFileListTooLong(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"MAX_FILES_PER_JOB": "100000"}})
	fs := make([]protocol.FileInfo, 20_000)
	for i := range fs {
		fs[i] = protocol.FileInfo{Name: fmt.Sprintf("%0200d.7", i), Size: 1}
	}
	refuseSubmission(t, ctx, s, protocol.Submit{Files: fs}, protocol.CodeTooLarge)
}

// smallDiskServer starts a server whose inputs are on an 8 MiB tmpfs
// (returned), without a free-space reserve.
func smallDiskServer(t *testing.T) (*servertest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, disk, 8<<20)
	s := servertest.Start(t, servertest.Options{Dir: dir, Extra: map[string]string{
		"RECON_SERVER_BASE_PFILE_DIR": "disk/inputs",
		"MIN_FREE_DISK_MB":            "0",
	}})
	return s, disk
}

// TestUploadBeyondFreeSpace puts the inputs on a small tmpfs: a file
// larger than its free space is refused with code no_space before a byte
// is stored; a file that fits when announced but not when sent (the disk
// filled meanwhile) fails with code no_space too; nothing is left behind,
// and the server takes the upload once there is room.
func TestUploadBeyondFreeSpace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s, disk := smallDiskServer(t)
	refuseSubmission(t, ctx, s, protocol.Submit{Files: []protocol.FileInfo{{Name: "huge.7", Size: 16 << 20}}}, protocol.CodeNoSpace)

	data := randomBytes(t, 4<<20)
	rc := rawClient(t, ctx, s)
	startUpload(t, rc, protocol.FileInfo{Name: "big.7", Size: int64(len(data))})
	// Something else fills the disk.
	junk := filepath.Join(disk, "junk")
	if err := os.WriteFile(junk, make([]byte, 6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		rc.Write(data)
		protocol.WriteMessage(rc, protocol.TypeFileDone, protocol.FileDone{SHA256: sha256Hex(data)})
	}()
	if code := wireError(t, rc); code != protocol.CodeNoSpace {
		t.Errorf("disk full during the upload: code %s, want no_space", code)
	}
	rc.Close()
	checkNothingStored(t, ctx, s)

	os.Remove(junk)
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "big.7", data)
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
}

// TestResultFilesOverCap makes a script write 100,000 files, ten times
// MAX_RESULT_FILES: the job fails with a clear error and keeps nothing.
func TestResultFilesOverCap(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Dir: memDir(t), Script: `#!/bin/sh
set -eu
cd "$3"
seq -f 'image%06g.dcm' 1 100000 | xargs touch
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "more than 10000 result files") || len(j.Results) != 0 {
		t.Fatalf("job ended %s (%q) with %d results; want failed for too many results", j.State, j.Error, len(j.Results))
	}
	waitGone(t, filepath.Join(s.Config.OutputBaseDir, job.JobID), "the output dir")
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("Fetch: %v, want code gone", err)
	}
}

// TestResultManifestTooLong makes a script write results within
// MAX_RESULT_FILES whose manifest would not fit in one message: the job
// fails clearly, instead of succeeding with results no one can fetch.
func TestResultManifestTooLong(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{
		Dir: memDir(t),
		Script: `#!/bin/sh
set -eu
cd "$3"
seq -f 'image%0200g.dcm' 1 20000 | xargs touch
`,
		Extra: map[string]string{"MAX_RESULT_FILES": "100000"},
	})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || !strings.Contains(j.Error, "20000 result files") || len(j.Results) != 0 {
		t.Fatalf("job ended %s (%q) with %d results; want failed for a manifest too long", j.State, j.Error, len(j.Results))
	}
	if q, err := c.Queue(ctx); err != nil || len(q) != 1 {
		t.Errorf("queue: %d jobs, %v", len(q), err)
	}
}

// TestResultDeviceNodes makes a script (running as root) create device
// nodes in its output: only the regular file comes back.
func TestResultDeviceNodes(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		servertest.SkipUnlessStrict(t, "skipped: creating device nodes needs root")
	}
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: `#!/bin/sh
set -eu
out="$3"
echo image > "$out/normal.dcm"
mknod "$out/null" c 1 3
mknod "$out/disk" b 7 0
mkdir "$out/dev"
mknod "$out/dev/zero.dcm" c 1 5
`})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "succeeded" || len(j.Results) != 1 || j.Results[0].Name != "normal.dcm" {
		t.Fatalf("job ended %s (%s) with results %+v, want only normal.dcm", j.State, j.Error, j.Results)
	}
	dst := t.TempDir()
	if _, files, err := c.Fetch(ctx, job.JobID, dst, nil); err != nil || len(files) != 1 {
		t.Fatalf("fetch: %+v, %v", files, err)
	}
	if names := dirNames(t, dst); len(names) != 1 || names[0] != "normal.dcm" {
		t.Errorf("fetched %v", names)
	}
}

// bigResultServer runs a job whose result is size bytes of random data and
// returns the server, a client, the job and the result's path on the
// server.
func bigResultServer(t *testing.T, ctx context.Context, size int) (*servertest.Server, *client.Client, string, string) {
	t.Helper()
	s := servertest.Start(t, servertest.Options{Script: fmt.Sprintf("#!/bin/sh\nhead -c %d /dev/urandom > \"$3/big.dat\"\n", size)})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	if j := waitDone(t, ctx, c, job.JobID); j.State != "succeeded" {
		t.Fatalf("job ended %s (%s)", j.State, j.Error)
	}
	return s, c, job.JobID, filepath.Join(s.Config.OutputBaseDir, job.JobID, "big.dat")
}

// TestResultGrowingWhileSent appends to a result on the server while it is
// fetched (a leftover process still writing): the client gets exactly the
// bytes that were collected and hashed.
func TestResultGrowingWhileSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 8 << 20
	_, c, id, path := bigResultServer(t, ctx, size)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte("more"), 1024)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.Write(chunk); err != nil {
				return
			}
		}
	}()
	dst := t.TempDir()
	_, files, err := c.Fetch(ctx, id, dst, nil)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("fetch of a growing result: %v", err)
	}
	got, err := os.ReadFile(files[0].Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetched %d bytes (%v), want the %d collected", len(got), err, len(want))
	}
}

// TestResultChangedWhileSent overwrites a result on the server in place
// while it is fetched: the client's hash check fails the fetch, nothing is
// written to the destination, and the results stay on the server.
func TestResultChangedWhileSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 32 << 20
	_, c, id, path := bigResultServer(t, ctx, size)
	var once sync.Once
	progress := func(done, total int64) {
		once.Do(func() {
			// Change the end of the file, which has not been sent yet.
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			f.WriteAt(bytes.Repeat([]byte{0}, 1<<20), size-1<<20)
			f.Close()
		})
	}
	dst := filepath.Join(t.TempDir(), "out")
	_, _, err := c.Fetch(ctx, id, dst, &client.FetchOptions{Progress: progress})
	if err == nil || !strings.Contains(err.Error(), "SHA-256 mismatch") {
		t.Fatalf("fetch of a result changed while sent: %v, want a SHA-256 mismatch", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the destination exists after a failed fetch: %v", err)
	}
	if !exists(path) {
		t.Errorf("the result was removed although the client did not confirm it")
	}
}

// TestResultRemovedBeforeFetch removes a result on the server after the
// job ended: a fetch fails with code gone before any byte is sent.
func TestResultRemovedBeforeFetch(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, c, id, path := bigResultServer(t, ctx, 1000)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Fetch(ctx, id, t.TempDir(), nil); !client.IsCode(err, client.CodeGone) {
		t.Errorf("fetch of a removed result: %v, want code gone", err)
	}
}

// TestLeftoverResultsSweptAtRestart puts back, while the server is down,
// the results of a delivered job (as a crash between recording the
// delivery and removing them would leave) and of a job the store does not
// know: a restart removes both.
func TestLeftoverResultsSweptAtRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	s := servertest.Start(t, servertest.Options{Dir: dir})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	waitDone(t, ctx, c, job.JobID)
	if _, _, err := c.Fetch(ctx, job.JobID, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Stop(t)
	unknown := "aaaaaaaaaaaaaaaaaaaaaaaaaa"
	for _, id := range []string{job.JobID, unknown} {
		d := filepath.Join(s.Config.OutputBaseDir, id)
		os.Mkdir(d, 0o700)
		writeInput(t, d, "left.dcm", []byte("left over"))
	}
	s2 := servertest.Start(t, servertest.Options{Dir: dir})
	if names := dirNames(t, s2.Config.OutputBaseDir); len(names) != 0 {
		t.Errorf("outputs dir holds %v after the restart", names)
	}
}

// TestScriptStderrFlood links the process cases (docs/SECURITY.md) to a
// real server: a script writing 64 MiB to stderr fails the job with a
// bounded message, and the server goes on.
func TestScriptStderrFlood(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("head"); err != nil {
		t.Skip("no head")
	}
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Script: "#!/bin/sh\nhead -c 67108864 /dev/zero | tr '\\0' x >&2\nexit 7\n"})
	c := s.Dial(t)
	job := submitOne(t, ctx, c, "P1.7", []byte("raw"))
	j := waitDone(t, ctx, c, job.JobID)
	if j.State != "failed" || len(j.Error) > 8<<10 {
		t.Fatalf("job ended %s with a %d-byte error", j.State, len(j.Error))
	}
	if fi, err := os.Stat(s.LogPath); err != nil || fi.Size() > 32<<20 {
		t.Errorf("server log after a 64 MiB stderr: %v, %v", fi.Size(), err)
	}
	checkServes(t, ctx, s)
}

// TestGlobalConnectionCap opens authenticated sessions from eight
// addresses until the server holds listen.MaxConns connections in all: the
// next one, from a fresh address, is refused; every open session is still
// served; once some close, a new client gets in.
func TestGlobalConnectionCap(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	addr := s.Addr().String()
	key := mustKey(t, s.Key)
	good, err := rawDial(ctx, addr, "127.0.0.2", key, secure.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	var sessions []*secure.Conn
	defer func() {
		for _, c := range sessions {
			c.Close()
		}
	}()
	// good is one connection: listen.MaxConns-1 more fill the cap, at most
	// listen.MaxConnsPerIP from each address.
	for i := 0; len(sessions) < listen.MaxConns-1; i++ {
		ip := fmt.Sprintf("127.0.5.%d", i/listen.MaxConnsPerIP+1)
		c, err := rawDial(ctx, addr, ip, key, secure.RoleClient)
		if err != nil {
			t.Fatalf("session %d (from %s) below the global cap: %v", len(sessions)+2, ip, err)
		}
		sessions = append(sessions, c)
	}
	if c, err := rawDial(ctx, addr, "127.0.6.1", key, secure.RoleClient); err == nil {
		c.Close()
		t.Fatalf("connection %d was admitted over the global cap of %d", listen.MaxConns+1, listen.MaxConns)
	}
	if _, err := rawStatus(good); err != nil {
		t.Errorf("the session from 127.0.0.2 is not served at the global cap: %v", err)
	}
	if _, err := rawStatus(sessions[len(sessions)-1]); err != nil {
		t.Errorf("the last session admitted is not served: %v", err)
	}
	for _, c := range sessions[:8] {
		c.Close()
	}
	servertest.Eventually(t, pollTimeout, "a new client is served once sessions close", func() bool {
		c, err := rawDial(ctx, addr, "127.0.6.1", key, secure.RoleClient)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = rawStatus(c)
		return err == nil
	})
}
