package relay_test

// The hardening catalogue's relay faults (docs/SECURITY.md): a backend
// stopped or frozen in the middle of an upload and of a download, and the
// relay stopped: a clear error or a retry that works, never a lost or
// doubled job.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/relay"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// faultIdle is the relay's idle timeout in these tests: how long it waits
// on a backend (or client) that stopped moving. Two seconds: at one, a
// health check on a loaded 2-core machine could miss it and mark a healthy
// backend down.
const faultIdle = 2 * time.Second

// proxyReadBuffer caps the kernel's receive buffer of each connection of a
// freezeProxy (SO_RCVBUF, which also turns off its autotuning).
const proxyReadBuffer = 256 << 10

// freezeProxy forwards connections to a backend and can freeze them: the
// bytes stop moving both ways and the connections stay open, as when the
// backend process is stopped with SIGSTOP.
type freezeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	thawed chan struct{} // closed while not frozen
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, thawed: make(chan struct{})}
	close(p.thawed)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			// A frozen backend takes no more than a stopped process
			// would: without a cap, loopback receive buffers grow to
			// tcp_rmem's maximum (32 MiB here), enough for a whole
			// test upload to pass the relay before the freeze bites.
			for _, conn := range []net.Conn{c, s} {
				conn.(*net.TCPConn).SetReadBuffer(proxyReadBuffer)
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(s, c)
			go p.pipe(c, s)
		}
	}()
	t.Cleanup(func() {
		p.thaw()
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.thawed
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.thawed = make(chan struct{})
}

func (p *freezeProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

// uploadingTo returns the backend a submission is being uploaded to, or "".
func uploadingTo(r *testRelay) string {
	for _, b := range r.Backends().Backends {
		if b.Uploading > 0 {
			return b.Address
		}
	}
	return ""
}

// jobsFor counts the jobs of submission sid on the server s.
func jobsFor(t *testing.T, ctx context.Context, s *servertest.Server, sid string) int {
	t.Helper()
	q, err := s.Dial(t).Queue(ctx)
	if err != nil {
		t.Fatalf("queue of %s: %v", s.Addr(), err)
	}
	n := 0
	for _, j := range q {
		if j.SubmissionID == sid {
			n++
		}
	}
	return n
}

// faultSetup is two backends, each behind a freeze proxy, and a relay in
// front of the proxies.
type faultSetup struct {
	backends []*servertest.Server
	proxies  []*freezeProxy
	relay    *testRelay
	dir      string
}

func (f *faultSetup) backendAt(addr string) (*servertest.Server, *freezeProxy) {
	for i, p := range f.proxies {
		if p.addr() == addr {
			return f.backends[i], p
		}
	}
	return nil, nil
}

func newFaultSetup(t *testing.T, script string) *faultSetup {
	t.Helper()
	key := keys.MustGenerate().Encode()
	f := &faultSetup{dir: t.TempDir()}
	// A broken upload is kept 1.8 s for resuming: checkOnce sees it go.
	f.backends = startBackends(t, 2, key, servertest.Options{Script: script, Extra: map[string]string{"UPLOAD_RESUME_HOURS": "0.0005"}})
	var addrs []string
	for _, b := range f.backends {
		p := startFreezeProxy(t, b.Addr().String())
		f.proxies = append(f.proxies, p)
		addrs = append(addrs, p.addr())
	}
	f.relay = startRelayWith(t, writeRelayConfig(t, f.dir, addrs, key, nil), relay.Options{IdleTimeout: faultIdle})
	return f
}

// waitJob polls job id through the relay until it ends. (Wait would do,
// but the relay's idle timeout toward backends is shorter here than the
// server's keepalive of a waiting client, so a job running longer than
// faultIdle would cut it.)
func (f *faultSetup) waitJob(t *testing.T, ctx context.Context, id string) *client.Job {
	t.Helper()
	var j *client.Job
	servertest.Eventually(t, 30*time.Second, "job "+id+" ends", func() bool {
		var err error
		if j, err = f.dial(t).Job(ctx, id); err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
		return j.Terminal()
	})
	return j
}

// dial connects a new client to the relay (a client idle longer than
// faultIdle is disconnected, so each step dials afresh).
func (f *faultSetup) dial(t *testing.T) *client.Client {
	t.Helper()
	return f.relay.dial(t)
}

// uploadWithFault submits a 32 MiB file with submission id sid through the
// relay and calls fault with the backend receiving it once 4 MiB are sent.
// Submit reconnects on its own (quickly, for the test); the errors that
// made it reconnect are returned.
func (f *faultSetup) uploadWithFault(t *testing.T, ctx context.Context, sid string, fault func(addr string)) (in string, job *client.Job, reconnects []error, err error) {
	t.Helper()
	in = writeInput(t, f.dir, sid+".7", 32<<20, 3)
	var once sync.Once
	// The fault comes at the first progress report with bytes sent and
	// the file not done: the client reports at most every 1/8 s, and a
	// fast upload of the whole 32 MiB takes less, so a threshold in bytes
	// could first be passed with the file done, its file_done then handed
	// over to the backend before it stops. The report is made from the
	// upload's writer, which waits for the fault.
	progress := func(done, total int64) {
		if done == 0 || done >= total {
			return
		}
		once.Do(func() {
			addr := uploadingTo(f.relay)
			if addr == "" {
				t.Error("no backend is receiving the upload")
				return
			}
			fault(addr)
		})
	}
	job, err = f.dial(t).Submit(ctx, []string{in}, &client.SubmitOptions{
		SubmissionID:   sid,
		Progress:       progress,
		ReconnectDelay: 10 * time.Millisecond,
		OnReconnect:    func(_ int, err error) { reconnects = append(reconnects, err) },
	})
	return in, job, reconnects, err
}

// checkFailedOver checks a submission that lost its backend mid-upload: the
// caller saw no error, Submit reconnected once, having been told
// (unavailable) that the backend was lost, and the job is on the other
// backend, runs, and its result is the input.
func (f *faultSetup) checkFailedOver(t *testing.T, ctx context.Context, in string, job *client.Job, reconnects []error, err error, failed string) {
	t.Helper()
	if err != nil {
		t.Fatalf("submission whose backend was lost mid-upload: %v; want it placed on the other backend without an error", err)
	}
	if len(reconnects) != 1 {
		t.Errorf("Submit reconnected %d times (%v), want once", len(reconnects), reconnects)
	} else if !client.IsCode(reconnects[0], protocol.CodeUnavailable) || !strings.Contains(reconnects[0].Error(), failed) {
		t.Logf("Submit reconnected after %v (not the relay's unavailable error naming %s: the connection ended first)", reconnects[0], failed)
	}
	if job.Backend == failed || job.Backend == "" {
		t.Fatalf("job %s placed on %q, want the backend other than the lost %s", job.JobID, job.Backend, failed)
	}
	if j := f.waitJob(t, ctx, job.JobID); j.State != "succeeded" || j.Backend != job.Backend {
		t.Fatalf("failed-over job: %+v", j)
	}
	_, files, err := f.dial(t).Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil || len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) {
		t.Fatalf("fetch of the failed-over job: %+v, %v", files, err)
	}
}

// sameJobOnRetry submits in again with sid, after it became job: the
// relay must return that job, from its backend.
func (f *faultSetup) sameJobOnRetry(t *testing.T, ctx context.Context, in, sid string, job *client.Job) {
	t.Helper()
	// The retry goes to the job's backend only. On this busy machine a
	// health check may time out and mark it down for a moment; the relay
	// then answers unavailable ("retry when it is back"), so retry while
	// that is the answer.
	var again *client.Job
	var err error
	servertest.Eventually(t, 20*time.Second, "the job's backend answers the retry", func() bool {
		again, err = f.dial(t).Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid, Reconnects: -1})
		return !client.IsCode(err, protocol.CodeUnavailable)
	})
	if err != nil {
		t.Fatalf("retry of %s: %v", sid, err)
	}
	if again.JobID != job.JobID || again.Backend != job.Backend {
		t.Errorf("retry of %s gave job %s on %s, want the job %s on %s", sid, again.JobID, again.Backend, job.JobID, job.Backend)
	}
}

// retryAndCheck submits in again with sid: it must be placed (on the other
// backend than failed), run and come back intact, once in all.
func (f *faultSetup) retryAndCheck(t *testing.T, ctx context.Context, in, sid, failed string) {
	t.Helper()
	c := f.dial(t)
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid})
	if err != nil {
		t.Fatalf("retry of %s: %v", sid, err)
	}
	if job.Backend == failed {
		t.Errorf("retry placed on the failed backend %s", failed)
	}
	if j := f.waitJob(t, ctx, job.JobID); j.State != "succeeded" {
		t.Fatalf("retried job: %+v", j)
	}
	_, files, err := f.dial(t).Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil || len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) {
		t.Fatalf("fetch of the retried job: %+v, %v", files, err)
	}
}

// checkOnce checks that submission sid is one job in all, and that no
// backend keeps an interrupted upload once UPLOAD_RESUME_HOURS has passed.
func (f *faultSetup) checkOnce(t *testing.T, ctx context.Context, sid string) {
	t.Helper()
	total := 0
	for _, b := range f.backends {
		total += jobsFor(t, ctx, b, sid)
		servertest.Eventually(t, 20*time.Second, "no interrupted upload left on "+b.Addr().String(), func() bool {
			m, _ := filepath.Glob(filepath.Join(b.Config.InputBaseDir, ".incoming-*"))
			return len(m) == 0
		})
	}
	if total != 1 {
		t.Errorf("submission %s is %d jobs on the backends, want 1", sid, total)
	}
}

// TestBackendFrozenMidUpload freezes the backend receiving an upload (as
// SIGSTOP would): the relay gives up on it within its idle timeout and
// tells the client it lost the backend; Submit submits again with the same
// submission id, the relay places it on the other backend, and the caller
// gets the job from there. When the frozen one resumes, the partial
// upload it kept for a resume expires, so the submission is one job.
func TestBackendFrozenMidUpload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFaultSetup(t, "")
	var frozen string
	start := time.Now()
	in, job, reconnects, err := f.uploadWithFault(t, ctx, "frozen-up", func(addr string) {
		frozen = addr
		_, p := f.backendAt(addr)
		p.freeze()
	})
	t.Logf("upload to a frozen backend: %v after the start, reconnects %v, err %v", time.Since(start).Round(time.Millisecond), reconnects, err)
	f.checkFailedOver(t, ctx, in, job, reconnects, err, frozen)
	// A retry with the same submission id now finds that job.
	f.sameJobOnRetry(t, ctx, in, "frozen-up", job)
	_, p := f.backendAt(frozen)
	p.thaw()
	servertest.Eventually(t, 10*time.Second, "the thawed backend is up", func() bool { return f.relay.healthy(t, frozen) })
	f.checkOnce(t, ctx, "frozen-up")
}

// TestBackendStoppedMidUpload stops the backend receiving an upload: the
// caller of Submit sees no error, and the job is on the other backend
// (Submit reconnected once and sent the files again from the start there).
func TestBackendStoppedMidUpload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFaultSetup(t, "")
	var stopped string
	in, job, reconnects, err := f.uploadWithFault(t, ctx, "stopped-up", func(addr string) {
		stopped = addr
		b, _ := f.backendAt(addr)
		b.Stop(t)
	})
	f.checkFailedOver(t, ctx, in, job, reconnects, err, stopped)
	// The other backend took the files from the start: it resumed nothing.
	b, _ := f.backendAt(stopped)
	other := f.other(b)
	if n := len(servertest.LogRecords(t, other.LogPath, "upload resumed")); n != 0 {
		t.Errorf("the backend the submission failed over to logged %d resumed uploads, want 0", n)
	}
	f.sameJobOnRetry(t, ctx, in, "stopped-up", job)
	// Back on its data: the interrupted upload is gone, and it has no job.
	back := servertest.Start(t, servertest.Options{Dir: b.Dir})
	f.backends = []*servertest.Server{back, other}
	f.checkOnce(t, ctx, "stopped-up")
}

// TestBackendLostMidUploadNoOther loses the backend receiving an upload
// while the only other backend is down: Submit tries again at most once, and
// the caller gets a clear error that no backend is available; no backend has a
// job for the submission.
func TestBackendLostMidUploadNoOther(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFaultSetup(t, "")
	f.backends[1].Stop(t)
	downAddr := f.proxies[1].addr()
	servertest.Eventually(t, 10*time.Second, "the stopped backend marked down", func() bool { return !f.relay.healthy(t, downAddr) })
	_, _, reconnects, err := f.uploadWithFault(t, ctx, "lost-no-other", func(addr string) {
		if addr != f.proxies[0].addr() {
			t.Errorf("upload went to %s, want %s", addr, f.proxies[0].addr())
		}
		f.backends[0].Stop(t)
	})
	if !client.IsCode(err, protocol.CodeUnavailable) || !strings.Contains(err.Error(), "no backend is available") {
		t.Fatalf("upload whose backend was lost with no other up: %v; want unavailable, no backend is available", err)
	}
	if client.Resumable(err) {
		t.Errorf("Resumable(%v) = true: no backend is available, retrying at once cannot help", err)
	}
	// Once, after the relay said it lost the backend; or not at all when
	// the relay's health check had marked that backend down before the
	// upload's own failure reached it, and its first answer was already
	// that no backend is available (retrying cannot help then).
	if len(reconnects) > 1 {
		t.Errorf("Submit reconnected %d times (%v), want at most once", len(reconnects), reconnects)
	}
	t.Logf("error: %v (after reconnecting on %v)", err, reconnects)
}

func (f *faultSetup) other(s *servertest.Server) *servertest.Server {
	if f.backends[0] == s {
		return f.backends[1]
	}
	return f.backends[0]
}

// bigResultJob submits a job through the relay whose result is 32 MiB and
// waits for it to succeed.
func (f *faultSetup) bigResultJob(t *testing.T, ctx context.Context) *client.Job {
	t.Helper()
	c := f.dial(t)
	job, err := c.Submit(ctx, []string{writeInput(t, f.dir, "P.7", 1000, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	j := f.waitJob(t, ctx, job.JobID)
	if j.State != "succeeded" || len(j.Results) != 1 {
		t.Fatalf("job: %+v", j)
	}
	return j
}

const bigResultScript = "#!/bin/sh\nhead -c 33554432 /dev/urandom > \"$3/big.dat\"\n"

// fetchWithFault fetches job through the relay and calls fault once the
// first bytes have arrived. Progress runs in the client's receive path, so
// the rest of the 32 MiB waits for it (a fault at a later mark could come
// only after the whole result had passed, as Progress is throttled).
func (f *faultSetup) fetchWithFault(t *testing.T, ctx context.Context, job *client.Job, fault func()) error {
	t.Helper()
	var once sync.Once
	progress := func(done, total int64) {
		if done > 0 && done < total {
			once.Do(fault)
		}
	}
	dst := filepath.Join(t.TempDir(), "out")
	_, _, err := f.dial(t).Fetch(ctx, job.JobID, dst, &client.FetchOptions{Progress: progress})
	if err == nil {
		return nil
	}
	if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a broken fetch left %s: %v", dst, serr)
	}
	return err
}

// fetchIntact fetches job through the relay and checks its one result
// against the backend's copy.
//
// A health check that began while the backend was frozen may still mark it
// down just after it was seen up again; the relay then answers
// unavailable ("try again when it is back"), and so the fetch is retried
// while that is the answer.
func (f *faultSetup) fetchIntact(t *testing.T, ctx context.Context, job *client.Job, want string) {
	t.Helper()
	var files []client.LocalFile
	var err error
	servertest.Eventually(t, 20*time.Second, "the backend serves the fetch", func() bool {
		_, files, err = f.dial(t).Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
		return !client.IsCode(err, protocol.CodeUnavailable)
	})
	if err != nil || len(files) != 1 || files[0].SHA256 != want {
		t.Fatalf("fetch after the fault: %+v, %v", files, err)
	}
}

// TestBackendFrozenMidDownload freezes the backend while its results pass
// through the relay: the relay gives up within its idle timeout, the
// client sees its fetch fail and keeps nothing, and once the backend
// resumes the results are fetched whole (they stay until confirmed).
func TestBackendFrozenMidDownload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFaultSetup(t, bigResultScript)
	job := f.bigResultJob(t, ctx)
	_, p := f.backendAt(job.Backend)
	start := time.Now()
	err := f.fetchWithFault(t, ctx, job, p.freeze)
	if err == nil {
		t.Fatal("fetch from a frozen backend succeeded")
	}
	if d := time.Since(start); d > 10*faultIdle+5*time.Second {
		t.Errorf("fetch from a frozen backend failed only after %v", d)
	}
	t.Logf("fetch from a frozen backend failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	p.thaw()
	servertest.Eventually(t, 10*time.Second, "the thawed backend is up", func() bool { return f.relay.healthy(t, job.Backend) })
	f.fetchIntact(t, ctx, job, job.Results[0].SHA256)
}

// TestBackendStoppedMidDownload stops the backend while its results pass
// through the relay: the fetch fails, and after the backend restarts on
// its data the results are fetched whole.
func TestBackendStoppedMidDownload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	b := startBackends(t, 1, key, servertest.Options{Script: bigResultScript})[0]
	pinPort(t, b)
	dir := t.TempDir()
	f := &faultSetup{backends: []*servertest.Server{b}, dir: dir}
	f.relay = startRelayWith(t, writeRelayConfig(t, dir, []string{b.Addr().String()}, key, nil), relay.Options{IdleTimeout: faultIdle})
	job := f.bigResultJob(t, ctx)
	if err := f.fetchWithFault(t, ctx, job, func() { b.Stop(t) }); err == nil {
		t.Fatal("fetch from a stopped backend succeeded")
	}
	servertest.Start(t, servertest.Options{Dir: b.Dir})
	servertest.Eventually(t, 10*time.Second, "the restarted backend is up", func() bool { return f.relay.healthy(t, b.Addr().String()) })
	f.fetchIntact(t, ctx, job, job.Results[0].SHA256)
}

// TestRelayStoppedMidUpload stops the relay in the middle of an upload:
// the client's submission fails; after the relay restarts on its state, a
// retry with the same submission id makes one job.
func TestRelayStoppedMidUpload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFaultSetup(t, "")
	stopped := make(chan struct{})
	in, _, _, err := f.uploadWithFault(t, ctx, "relay-stop", func(string) {
		go func() { f.relay.stop(t); close(stopped) }()
	})
	<-stopped
	if err == nil {
		t.Fatal("upload through a relay that stopped succeeded")
	}
	f.relay = startRelayWith(t, f.relay.OptsPath, relay.Options{IdleTimeout: faultIdle})
	f.retryAndCheck(t, ctx, in, "relay-stop", "")
	f.checkOnce(t, ctx, "relay-stop")
}

// TestRelayStoppedDuringWait stops the relay while a client waits for a
// job: the wait fails, and through the restarted relay the job is followed
// to its end and fetched.
func TestRelayStoppedDuringWait(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	sig := t.TempDir()
	f := newFaultSetup(t, fmt.Sprintf("#!/bin/sh\nwhile [ ! -e %q ]; do sleep 0.02; done\ncp \"$1\"/* \"$3\"/\n", filepath.Join(sig, "go")))
	in := writeInput(t, f.dir, "w.7", 1000, 9)
	c := f.dial(t)
	job, err := c.Submit(ctx, []string{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Wait(ctx, job.JobID, nil)
		waitErr <- err
	}()
	servertest.Eventually(t, 10*time.Second, "the client waits", func() bool {
		for _, cl := range f.relay.Clients().Clients {
			if cl.Request == string(protocol.TypeWait) {
				return true
			}
		}
		return false
	})
	f.relay.stop(t)
	if err := <-waitErr; err == nil {
		t.Fatal("wait through a relay that stopped succeeded")
	}
	f.relay = startRelayWith(t, f.relay.OptsPath, relay.Options{IdleTimeout: faultIdle})
	os.WriteFile(filepath.Join(sig, "go"), nil, 0o600)
	if j := f.waitJob(t, ctx, job.JobID); j.State != "succeeded" {
		t.Fatalf("job after the relay restarted: %+v", j)
	}
	_, files, err := f.dial(t).Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil || len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) {
		t.Fatalf("fetch after the relay restarted: %+v, %v", files, err)
	}
}

// TestRelayHostileControlMessages sends malformed control messages to the
// relay: each gets bad_request (or too_large), then the session ends, and
// the relay goes on serving.
func TestRelayHostileControlMessages(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String()}, key, nil))
	k, err := keys.Parse(r.Key)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(s string) []byte {
		return append([]byte{byte(len(s) >> 24), byte(len(s) >> 16), byte(len(s) >> 8), byte(len(s))}, s...)
	}
	tests := []struct {
		raw  []byte
		want protocol.Code
	}{
		{frame(`{"type":"status","type":"queue"}`), protocol.CodeBadRequest},
		{frame(`{"type":"submit","body":{"files":[{"name":"a","size":1}],"files":[]}}`), protocol.CodeBadRequest},
		{frame(`{"type":"status"} trailing`), protocol.CodeBadRequest},
		{frame(`{"type":"status","body":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`), protocol.CodeBadRequest},
		{frame(`{"type":"status","x":1}`), protocol.CodeBadRequest},
		{[]byte{0xff, 0xff, 0xff, 0xff}, protocol.CodeTooLarge},
	}
	for _, tt := range tests {
		c, err := secure.Dial(ctx, r.Addr().String(), secure.Config{Key: k, Role: secure.RoleClient})
		if err != nil {
			t.Fatal(err)
		}
		c.Write(tt.raw)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := protocol.ReadMessage(c)
		if err != nil {
			t.Fatalf("%q: no answer: %v", tt.raw, err)
		}
		if err := m.Decode(protocol.TypeStatusReply, nil); !protocol.IsCode(err, tt.want) {
			t.Errorf("%q: answer %v, want code %s", tt.raw, err, tt.want)
		}
		if _, err := protocol.ReadMessage(c); err == nil {
			t.Errorf("%q: the session goes on", tt.raw)
		}
		c.Close()
	}
	if _, err := r.dial(t).Status(ctx); err != nil {
		t.Errorf("relay after hostile messages: %v", err)
	}
}
