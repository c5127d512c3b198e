package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/relay"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestThroughRelay runs a client against a relay exactly as against a
// server: status, submit, wait, job status, queue, fetch.
func TestThroughRelay(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String(), bs[1].Addr().String()}, key, nil))
	c := r.dial(t)

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Version != "test-relay" || st.UptimeSeconds <= 0 || st.MaxWorkers != 4 {
		t.Errorf("status through the relay = %+v, want the relay's version and uptime and both backends' 2+2 workers", st)
	}

	where := map[string]string{} // job id → backend
	backends := map[string]bool{}
	for i := range 2 {
		in := writeInput(t, dir, fmt.Sprintf("scan%d.7", i), 100_000+i, byte(i))
		job := submitAndFetch(t, c, in)
		if job.Backend == "" {
			t.Errorf("job %s submitted through the relay names no backend", job.JobID)
		}
		backends[job.Backend] = true
		where[job.JobID] = job.Backend
		j, err := c.Job(ctx, job.JobID)
		if err != nil {
			t.Fatalf("job status through the relay: %v", err)
		}
		if j.State != "succeeded" || j.Backend != job.Backend || !j.Delivered {
			t.Errorf("job %s = state %s, backend %q, delivered %v; want succeeded on %s, delivered", j.JobID, j.State, j.Backend, j.Delivered, job.Backend)
		}
	}
	if len(backends) != 2 {
		t.Errorf("two jobs on an idle relay went to %v, want one on each backend", backends)
	}
	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatalf("queue: %v", err)
	}
	got := map[string]string{}
	for _, j := range q {
		got[j.JobID] = j.Backend
	}
	for id, backend := range where {
		if got[id] != backend {
			t.Errorf("queue through the relay: job %s labelled %q, want its backend %s (queue: %v)", id, got[id], backend, got)
		}
	}
	// An unknown job is not found, as on a server.
	if _, err := c.Job(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa"); !client.IsCode(err, client.CodeNotFound) {
		t.Errorf("status of an unknown job: %v, want not_found", err)
	}
	if _, err := c.Job(ctx, "../../etc"); !client.IsCode(err, client.CodeNotFound) {
		t.Errorf("status of a malformed job id: %v, want not_found", err)
	}
	// The same submission id gives the same job, not a second one.
	in := writeInput(t, dir, "again.7", 1000, 9)
	a, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: "sub-1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: "sub-1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.JobID != b.JobID || a.Backend != b.Backend {
		t.Errorf("resubmission with the same id gave job %s on %s, first was %s on %s", b.JobID, b.Backend, a.JobID, a.Backend)
	}
	st2 := r.Status()
	if st2.JobsRelayed != 3 || st2.BytesIn < 200_000 || st2.BytesOut < 200_000 {
		t.Errorf("relay status %+v: want 3 jobs relayed and the bytes counted", st2)
	}
}

// TestConcurrentSubmissionsSpread sends several jobs at once through a relay
// with three backends: each backend gets some, and every result is right.
func TestConcurrentSubmissionsSpread(t *testing.T) {
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 3, key, servertest.Options{})
	dir := t.TempDir()
	var addrs []string
	for _, b := range bs {
		addrs = append(addrs, b.Addr().String())
	}
	r := startRelay(t, writeRelayConfig(t, dir, addrs, key, nil))
	const n = 6
	per := submitConcurrently(t, r, n, func(i int) string {
		return writeInput(t, dir, fmt.Sprintf("c%d.7", i), 300_000+i*1000, byte(i*31))
	})
	for _, a := range addrs {
		if per[a] == 0 {
			t.Errorf("backend %s got none of %d concurrent jobs: %v", a, n, per)
		}
	}
	placed := map[string]int64{}
	for _, b := range r.Backends().Backends {
		placed[b.Address] = b.JobsPlaced
	}
	for a, k := range per {
		if placed[a] != int64(k) {
			t.Errorf("backend %s: jobs_placed %d, want %d", a, placed[a], k)
		}
	}
}

// TestBackendDownAndBack stops a backend: it is marked down within two
// health intervals, new jobs go to the other, its jobs report clearly that
// their backend is down, and after a restart they are reachable again.
func TestBackendDownAndBack(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	pinPort(t, bs[0])
	a, b := bs[0].Addr().String(), bs[1].Addr().String()
	dir := t.TempDir()
	// See checkMarkedDown for why this test's interval is 1 s.
	r := startRelay(t, writeRelayConfig(t, dir, []string{a, b}, key, map[string]string{"BACKEND_HEALTH_INTERVAL_SECONDS": "1"}))
	c := r.dial(t)

	// One job on each backend; keep A's results for after its restart.
	var onA *client.Job
	for i := range 2 {
		in := writeInput(t, dir, fmt.Sprintf("s%d.7", i), 50_000, byte(i))
		job, err := c.Submit(ctx, []string{in}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Wait(ctx, job.JobID, nil); err != nil {
			t.Fatal(err)
		}
		if job.Backend == a {
			onA = job
		}
	}
	if onA == nil {
		t.Fatal("no job went to the first backend")
	}

	stopped := time.Now()
	bs[0].Stop(t)
	servertest.Eventually(t, 10*time.Second, "backend marked down", func() bool { return !r.healthy(t, a) })
	checkMarkedDown(t, r.Config.LogFile, a, stopped, time.Second)
	for _, info := range r.Backends().Backends {
		if info.Address == a && info.LastError == "" {
			t.Errorf("backend %s is down without a last error: %+v", a, info)
		}
	}

	for i := range 3 {
		in := writeInput(t, dir, fmt.Sprintf("d%d.7", i), 10_000, byte(i))
		job, err := c.Submit(ctx, []string{in}, nil)
		if err != nil {
			t.Fatalf("submit while a backend is down: %v", err)
		}
		if job.Backend != b {
			t.Errorf("job submitted while %s is down went to %s", a, job.Backend)
		}
	}
	_, err := c.Job(ctx, onA.JobID)
	if !client.IsCode(err, protocol.CodeUnavailable) || !strings.Contains(err.Error(), "down") || !strings.Contains(err.Error(), a) {
		t.Errorf("status of a job on the stopped backend: %v; want unavailable, naming %s as down", err, a)
	}
	_, _, err = c.Fetch(ctx, onA.JobID, filepath.Join(t.TempDir(), "x"), nil)
	if !client.IsCode(err, protocol.CodeUnavailable) {
		t.Errorf("fetch of a job on the stopped backend: %v; want unavailable", err)
	}
	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatalf("queue while a backend is down: %v", err)
	}
	for _, j := range q {
		if j.Backend != b {
			t.Errorf("queue while %s is down lists job %s on %s", a, j.JobID, j.Backend)
		}
	}

	// Back on the same address with the same data.
	servertest.Start(t, servertest.Options{Dir: bs[0].Dir})
	servertest.Eventually(t, 10*time.Second, "backend up again", func() bool { return r.healthy(t, a) })
	j, err := c.Job(ctx, onA.JobID)
	if err != nil || j.State != "succeeded" || j.Backend != a {
		t.Fatalf("status after the backend came back: %+v, %v", j, err)
	}
	_, files, err := c.Fetch(ctx, onA.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil || len(files) != 1 {
		t.Fatalf("fetch after the backend came back: %v, %v", files, err)
	}
}

// checkMarkedDown checks that the relay, whose JSON log is logPath, marked
// the backend at addr down within two health intervals of the moment it
// was stopped or killed (gone, taken just before the stop or kill). The
// time of marking down is the relay's own: the time of its "backend down"
// log record, written as it marks the backend down.
//
// This is the requirement itself (issue: "A backend killed: marked down
// within two health intervals"), not a performance figure: the relay
// checks each backend every interval. A stopped or killed process refuses
// connections at once (and resets those it had), so the check in progress
// at the stop fails or passes within milliseconds, and the next one, at
// most an interval later, fails in milliseconds: the backend is marked
// down about one interval after it is gone, which leaves almost a whole
// interval of margin for a busy machine. (A check's timeout, at least
// 3 s, only bounds a frozen or unreachable backend.) Hence the interval of
// 1 s in these tests: with a much shorter one, a busy machine's delays
// alone could exceed two intervals.
func checkMarkedDown(t *testing.T, logPath, addr string, gone time.Time, interval time.Duration) {
	t.Helper()
	var at time.Time
	for _, rec := range servertest.LogRecords(t, logPath, "backend down") {
		if rec["backend"] != addr {
			continue
		}
		ts, _ := rec["time"].(string)
		tm, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatalf("relay log: \"backend down\" record with time %q: %v", ts, err)
		}
		if !tm.Before(gone) {
			at = tm
			break
		}
	}
	if at.IsZero() {
		t.Fatalf("relay log %s has no \"backend down\" record for %s after it was stopped", logPath, addr)
	}
	d := at.Sub(gone)
	t.Logf("the relay marked backend %s down %v after it was stopped (health interval %v)", addr, d.Round(time.Millisecond), interval)
	if d > 2*interval {
		t.Errorf("the relay marked backend %s down %v after it was stopped; the requirement is within two health intervals (%v)", addr, d, 2*interval)
	}
}

// TestRelayRestartKeepsRoutes restarts the relay: it still knows which
// backend holds which job, from its state directory.
func TestRelayRestartKeepsRoutes(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	a, b := bs[0].Addr().String(), bs[1].Addr().String()
	dir := t.TempDir()
	opts := writeRelayConfig(t, dir, []string{a, b}, key, nil)
	r := startRelay(t, opts)
	c := r.dial(t)
	where := map[string]string{}
	for i := range 2 {
		in := writeInput(t, dir, fmt.Sprintf("r%d.7", i), 20_000, byte(i))
		job, err := c.Submit(ctx, []string{in}, nil)
		if err != nil {
			t.Fatal(err)
		}
		where[job.JobID] = job.Backend
	}
	// An idle relay alternates: one job on each backend, so that the
	// restarted relay is tested on both.
	if on := sortedValues(where); len(on) != 2 || on[0] == on[1] {
		t.Fatalf("two jobs on an idle relay went to %v, want one on each of %s and %s", on, a, b)
	}
	c.Close()
	r.stop(t)

	r2 := startRelay(t, opts)
	c2 := r2.dial(t)
	for id, backend := range where {
		j, err := c2.Wait(ctx, id, nil)
		if err != nil || j.Backend != backend || j.State != "succeeded" {
			t.Fatalf("wait for %s after a relay restart: %+v, %v; want succeeded on %s", id, j, err, backend)
		}
		j, err = c2.Job(ctx, id)
		if err != nil || j.JobID != id || j.Backend != backend || j.State != "succeeded" || j.Delivered {
			t.Fatalf("status of %s after a relay restart: %+v, %v; want succeeded on %s, not yet delivered", id, j, err, backend)
		}
		_, files, err := c2.Fetch(ctx, id, filepath.Join(t.TempDir(), "out"), nil)
		if err != nil || len(files) != 1 {
			t.Errorf("fetch %s after a relay restart: %v, %v", id, files, err)
		}
		if j, err := c2.Job(ctx, id); err != nil || j.Backend != backend || !j.Delivered {
			t.Errorf("status of %s after its fetch through the restarted relay: %+v, %v; want delivered, on %s", id, j, err, backend)
		}
	}
	// The route is remembered, not rediscovered: with its backend down, a
	// job is reported as on that backend.
	bs[0].Stop(t)
	servertest.Eventually(t, 10*time.Second, "backend marked down", func() bool { return !r2.healthy(t, a) })
	checked := 0
	for id, backend := range where {
		if backend != a {
			continue
		}
		checked++
		if _, err := c2.Job(ctx, id); !client.IsCode(err, protocol.CodeUnavailable) || !strings.Contains(err.Error(), a) {
			t.Errorf("status of %s with its backend down after a relay restart: %v", id, err)
		}
	}
	if checked != 1 {
		t.Errorf("checked %d jobs on the stopped backend, want 1", checked)
	}
}

// sortedValues returns the values of m, sorted.
func sortedValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return vs
}

// TestNoHealthyBackend: with every backend unreachable, a submission fails
// quickly and clearly, and the relay's own status still answers.
func TestNoHealthyBackend(t *testing.T) {
	ctx := testCtx(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{dead}, keys.MustGenerate().Encode(), nil))
	if r.healthy(t, dead) {
		t.Errorf("an unreachable backend is healthy after the first check")
	}
	c := r.dial(t)
	in := writeInput(t, dir, "x.7", 1000, 1)
	start := time.Now()
	_, err = c.Submit(ctx, []string{in}, nil)
	if !client.IsCode(err, protocol.CodeUnavailable) || !strings.Contains(err.Error(), "no backend") {
		t.Errorf("submit with no healthy backend: %v; want unavailable, no backend", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("submit with no healthy backend took %v", d)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Version != "test-relay" {
		t.Errorf("relay status with no healthy backend: %+v, %v", st, err)
	}
	q, err := c.Queue(ctx)
	if err != nil || len(q) != 0 {
		t.Errorf("queue with no healthy backend: %v, %v", q, err)
	}
}

// TestUnreachableBackendSkipped: a backend that cannot be reached although
// it was healthy at its last check is skipped without the client noticing.
func TestUnreachableBackendSkipped(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	a, b := bs[0].Addr().String(), bs[1].Addr().String()
	dir := t.TempDir()
	// A long health interval: the relay finds out only by connecting.
	r := startRelay(t, writeRelayConfig(t, dir, []string{a, b}, key, map[string]string{"BACKEND_HEALTH_INTERVAL_SECONDS": "3600"}))
	bs[0].Stop(t)
	c := r.dial(t)
	for i := range 3 {
		in := writeInput(t, dir, fmt.Sprintf("u%d.7", i), 1000, byte(i))
		job, err := c.Submit(ctx, []string{in}, nil)
		if err != nil {
			t.Fatalf("submit with one backend gone: %v", err)
		}
		if job.Backend != b {
			t.Errorf("job went to %s, want %s", job.Backend, b)
		}
	}
	if r.healthy(t, a) {
		t.Errorf("a backend that refused a connection is still healthy")
	}
}

// TestRefused: wrong keys, wrong roles and addresses outside
// TRUSTED_CLIENT_IPS are all refused.
func TestRefused(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	r := startRelay(t, writeRelayConfig(t, t.TempDir(), []string{bs[0].Addr().String()}, key, nil))
	addr, adminAddr := r.Addr().String(), r.AdminAddr().String()
	clientKey, _ := keys.Parse(r.Key)
	backendKey, _ := keys.Parse(key)

	tests := []struct {
		name string
		addr string
		cfg  secure.Config
	}{
		{"wrong relay key", addr, secure.Config{Key: keys.MustGenerate(), Role: secure.RoleClient}},
		{"the backends' key at the relay", addr, secure.Config{Key: backendKey, Role: secure.RoleClient}},
		{"the client key at the relay admin port", adminAddr, secure.Config{Key: clientKey, Role: secure.RoleClient}},
		{"the client key with the relay-admin role", adminAddr, secure.Config{Key: clientKey, Role: secure.RoleRelayAdmin}},
		{"the admin key at the client port", addr, secure.Config{Key: r.AdminKey, Role: secure.RoleRelayAdmin}},
		{"the admin key with the client role", addr, secure.Config{Key: r.AdminKey, Role: secure.RoleClient}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := secure.Dial(ctx, tt.addr, tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, secure.ErrAuth) {
				t.Errorf("error %v, want ErrAuth", err)
			}
		})
	}
	t.Run("client package with a wrong key", func(t *testing.T) {
		_, err := client.Dial(ctx, client.Config{Address: addr, Key: key})
		if !errors.Is(err, client.ErrAuth) {
			t.Errorf("client.Dial with the backends' key: %v, want ErrAuth", err)
		}
	})
	t.Run("address outside TRUSTED_CLIENT_IPS", func(t *testing.T) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		c, err := secure.Client(ctx, conn, secure.Config{Key: clientKey, Role: secure.RoleClient})
		if err == nil {
			c.Close()
			t.Fatal("a client from 127.0.0.2 connected; TRUSTED_CLIENT_IPS is 127.0.0.1")
		}
		if !errors.Is(err, secure.ErrAuth) {
			t.Errorf("error %v, want ErrAuth", err)
		}
	})
	// And the right keys work.
	if _, err := r.admin(t).Status(ctx); err != nil {
		t.Errorf("relay admin with the right key: %v", err)
	}
	if _, err := r.dial(t).Status(ctx); err != nil {
		t.Errorf("client with the right key: %v", err)
	}
}

// TestAdmin checks the relay admin's status, backends and clients while a
// client waits on a job that runs until the test lets it end.
func TestAdmin(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	gate := filepath.Join(t.TempDir(), "release")
	script := `#!/bin/sh
while [ ! -e "` + gate + `" ]; do sleep 0.02; done
cp "$1"/* "$3"/
`
	bs := startBackends(t, 2, key, servertest.Options{Script: script})
	a, b := bs[0].Addr().String(), bs[1].Addr().String()
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{a, b}, key, nil))
	adm := r.admin(t)

	c := r.dial(t)
	in := writeInput(t, dir, "w.7", 12345, 3)
	job, err := c.Submit(ctx, []string{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Wait(ctx, job.JobID, nil)
		waitErr <- err
	}()
	var waiting protocol.RelayClientInfo
	servertest.Eventually(t, 10*time.Second, "client listed as waiting", func() bool {
		cl, err := adm.Clients(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ci := range cl.Clients {
			if ci.Request == string(protocol.TypeWait) && ci.Backend != "" {
				waiting = ci
				return true
			}
		}
		return false
	})
	if waiting.JobID != job.JobID || waiting.Backend != job.Backend || waiting.BytesIn != 12345 ||
		!strings.HasPrefix(waiting.Address, "127.0.0.1:") || waiting.ConnectedSince.IsZero() || waiting.Requests != 3 {
		t.Errorf("waiting client = %+v; want job %s on %s, 12345 bytes in, 3 requests (hello, submit, wait)", waiting, job.JobID, job.Backend)
	}

	st, err := adm.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "test-relay" || st.UptimeSeconds <= 0 || st.ClientsConnected != 1 || st.ClientsTotal != 1 ||
		st.JobsRelayed != 1 || st.BytesIn != 12345 || st.Backends != 2 || st.BackendsHealthy != 2 {
		t.Errorf("relay admin status = %+v", st)
	}
	servertest.Eventually(t, 10*time.Second, "running job seen by a health check", func() bool {
		bl, err := adm.Backends(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, bi := range bl.Backends {
			if bi.Address == job.Backend {
				return bi.Running == 1
			}
		}
		return false
	})
	bl, err := adm.Backends(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, bi := range bl.Backends {
		addrs = append(addrs, bi.Address)
		if !bi.Healthy || bi.LastCheck.IsZero() || bi.LatencySeconds <= 0 || bi.Version != "test" {
			t.Errorf("backend %+v: want healthy, checked, with latency and version", bi)
		}
		want := int64(0)
		if bi.Address == job.Backend {
			want = 1
		}
		if bi.JobsPlaced != want {
			t.Errorf("backend %s: jobs_placed %d, want %d", bi.Address, bi.JobsPlaced, want)
		}
	}
	if diff := cmp.Diff([]string{a, b}, addrs); diff != "" {
		t.Errorf("backends not in BACKEND_SERVERS order (-want +got):\n%s", diff)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("wait through the relay: %v", err)
	}
	c.Close()
	servertest.Eventually(t, 10*time.Second, "client gone from the list", func() bool {
		cl, err := adm.Clients(ctx)
		return err == nil && len(cl.Clients) == 0
	})
	if st, _ := adm.Status(ctx); st.ClientsConnected != 0 || st.ClientsTotal != 1 {
		t.Errorf("after the client left: %+v", st)
	}
}

// TestBackendRefusalForwarded: an error a backend gives before accepting a
// submission that every backend would give reaches the client unchanged.
func TestBackendRefusalForwarded(t *testing.T) {
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 2, key, servertest.Options{})
	r := startRelay(t, writeRelayConfig(t, t.TempDir(), []string{bs[0].Addr().String(), bs[1].Addr().String()}, key, nil))
	ck, _ := keys.Parse(r.Key)
	c, err := secure.Dial(ctx, r.Addr().String(), secure.Config{Key: ck, Role: secure.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = protocol.WriteMessage(c, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "../escape", Size: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := protocol.ReadMessage(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, nil); !protocol.IsCode(err, protocol.CodeInvalidName) {
		t.Errorf("submission of ../escape through the relay: %v, want invalid_name", err)
	}
	// The session goes on.
	if err := protocol.WriteMessage(c, protocol.TypeStatus, protocol.Empty{}); err != nil {
		t.Fatal(err)
	}
	m, err = protocol.ReadMessage(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeStatusReply, &protocol.StatusReply{}); err != nil {
		t.Errorf("status after a refused submission: %v", err)
	}
	// A negative size is the relay's own to refuse; then the door.
	err = protocol.WriteMessage(c, protocol.TypeSubmit, protocol.Submit{Files: []protocol.FileInfo{{Name: "a", Size: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err = protocol.ReadMessage(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(protocol.TypeSubmitReady, nil); !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Errorf("submission with a negative size: %v, want bad_request", err)
	}
	if _, err := protocol.ReadMessage(c); err == nil {
		t.Errorf("session went on after a bad request")
	}
}

// TestNewRefusesWithoutBackendKey: the relay does not start while
// BACKEND_SHARED_KEY is unset.
func TestNewRefusesWithoutBackendKey(t *testing.T) {
	dir := t.TempDir()
	opts := writeRelayConfig(t, dir, []string{"127.0.0.1:1"}, "", nil)
	cfg, _, err := config.LoadRelay(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.New(cfg, nil, relay.Options{}); !errors.Is(err, relay.ErrNoBackendKey) {
		t.Errorf("relay.New without BACKEND_SHARED_KEY: %v, want ErrNoBackendKey", err)
	}
}

// TestStateDirLocked: two relays cannot share a state directory.
func TestStateDirLocked(t *testing.T) {
	dir := t.TempDir()
	opts := writeRelayConfig(t, dir, []string{"127.0.0.1:1"}, keys.MustGenerate().Encode(), nil)
	cfg, _, err := config.LoadRelay(opts)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := relay.New(cfg, nil, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Shutdown(context.Background())
	if _, err := relay.New(cfg, nil, relay.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second relay on the same state dir: %v", err)
	}
	// Shutdown without Start, twice, is fine.
	if err := r1.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	if err := r1.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}
