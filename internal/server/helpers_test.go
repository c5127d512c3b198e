package server_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// testTimeout bounds every test; the whole package stays well under it.
const testTimeout = 45 * time.Second

// pollTimeout bounds each wait for a condition.
const pollTimeout = 20 * time.Second

// testContext returns a context that ends when the test does or after
// testTimeout.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// writeInput writes a file into dir and returns its path.
func writeInput(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func blake3Hex(b []byte) string {
	h := protocol.NewHash(protocol.HashBLAKE3)
	h.Write(b)
	return protocol.HexSum(h)
}

// sameContent reports whether a file's digests, as stored or shown (a
// SHA-256, a BLAKE3 or both: an input checked with BLAKE3 has no SHA-256),
// are those of data; at least one must be there.
func sameContent(sha, b3 string, data []byte) bool {
	if sha == "" && b3 == "" {
		return false
	}
	return (sha == "" || sha == sha256Hex(data)) && (b3 == "" || b3 == blake3Hex(data))
}

// dirNames lists dir's entry names, sorted ("" entries for a missing dir).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// incoming lists the upload directories that are not a job (yet).
func incoming(t *testing.T, s *servertest.Server) []string {
	t.Helper()
	var out []string
	for _, n := range dirNames(t, s.Config.InputBaseDir) {
		if strings.HasPrefix(n, ".incoming-") {
			out = append(out, n)
		}
	}
	return out
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// releaseScript is a reconstruction script that appends a line to
// DIR/runs-<job id>, waits until DIR/release-all or DIR/release-<job id>
// exists, then copies each input to <name>.out.
func releaseScript(dir string) string {
	return fmt.Sprintf(`#!/bin/sh
set -eu
d=%q
echo run >> "$d/runs-$RECON_JOB_ID"
while [ ! -e "$d/release-all" ] && [ ! -e "$d/release-$RECON_JOB_ID" ]; do sleep 0.02; done
for f in "$1"/*; do cp "$f" "$3/$(basename "$f").out"; done
`, dir)
}

// release lets the job id (or every job, for "all") of a releaseScript end.
func release(t *testing.T, dir, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "release-"+id), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitJob polls the job until cond holds and returns it.
func waitJob(t *testing.T, ctx context.Context, c *client.Client, id string, what string, cond func(*client.Job) bool) *client.Job {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for wait := time.Millisecond; ; wait = min(wait*2, 50*time.Millisecond) {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatalf("Job(%s): %v", id, err)
		}
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: timed out waiting until %s; last seen state %s, error %q", id, what, j.State, j.Error)
		}
		time.Sleep(wait)
	}
}

// waitDone waits for the job to end and returns its final state.
func waitDone(t *testing.T, ctx context.Context, c *client.Client, id string) *client.Job {
	t.Helper()
	j, err := c.Wait(ctx, id, nil)
	if err != nil {
		t.Fatalf("Wait(%s): %v", id, err)
	}
	return j
}

// submitOne submits one small file through the Go client.
func submitOne(t *testing.T, ctx context.Context, c *client.Client, name string, data []byte) *client.Job {
	t.Helper()
	p := writeInput(t, t.TempDir(), name, data)
	j, err := c.Submit(ctx, []string{p}, nil)
	if err != nil {
		t.Fatalf("Submit(%s): %v", name, err)
	}
	return j
}

// mustKey parses a key in text form.
func mustKey(t *testing.T, s string) keys.Key {
	t.Helper()
	k, err := keys.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawDial opens a secure channel to addr from the local address localIP
// ("" lets the kernel choose), for requests the Go client refuses to send.
func rawDial(ctx context.Context, addr, localIP string, key keys.Key, role secure.Role) (*secure.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return secure.Client(ctx, conn, secure.Config{Key: key, Role: role, HandshakeTimeout: 10 * time.Second})
}

// rawClient dials the server's client port with its key and closes the
// connection when the test ends.
func rawClient(t *testing.T, ctx context.Context, s *servertest.Server) *secure.Conn {
	t.Helper()
	c, err := rawDial(ctx, s.Addr().String(), "", mustKey(t, s.Key), secure.RoleClient)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	t.Cleanup(func() { stop(); c.Close() })
	return c
}

// request sends one message and reads the reply.
func request(c *secure.Conn, typ protocol.Type, body any) (protocol.Message, error) {
	if err := protocol.WriteMessage(c, typ, body); err != nil {
		return protocol.Message{}, err
	}
	return protocol.ReadMessage(c)
}

// rawStatus asks for the server status on c.
func rawStatus(c *secure.Conn) (*protocol.StatusReply, error) {
	m, err := request(c, protocol.TypeStatus, protocol.Empty{})
	if err != nil {
		return nil, err
	}
	var st protocol.StatusReply
	if err := m.Decode(protocol.TypeStatusReply, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// checkServes fails the test unless the server answers a status request on
// a new connection.
func checkServes(t *testing.T, ctx context.Context, s *servertest.Server) {
	t.Helper()
	c, err := client.Dial(ctx, s.ClientConfig())
	if err != nil {
		t.Fatalf("server does not accept a new client: %v", err)
	}
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("server does not answer status on a new connection: %v", err)
	}
}

// processGone reports whether pid no longer runs (no such process, or a
// zombie waiting for a parent that does not reap it).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// waitGone waits until path no longer exists. The server removes a job's
// input dir just after recording its end, so a client may hear of the end
// a moment before.
func waitGone(t *testing.T, path, what string) {
	t.Helper()
	servertest.Eventually(t, pollTimeout, what+" is removed", func() bool { return !exists(path) })
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

// rawFrame frames a control message payload as it travels: a 4-byte length
// and the bytes.
func rawFrame(payload string) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
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
	// Detached, as memDir does: a process of a parallel test that forked
	// while a file here was open holds the mount until it execs, which
	// made a plain unmount fail now and then with "device busy".
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
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
