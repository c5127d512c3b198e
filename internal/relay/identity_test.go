package relay_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestIdentitiesAcrossBackends: two backends with RELAY_SHARED_KEY and the
// same identities behind a relay with its own CLIENT_KEYS_FILE. alice's
// jobs spread over both; bob's queue through the relay is his own, and his
// requests about alice's jobs (found through the routes, or by asking every
// backend) answer as for a job that does not exist. A relay reload that
// removes bob ends his open session at once.
func TestIdentitiesAcrossBackends(t *testing.T) {
	ctx := testCtx(t)
	relayKey := keys.MustGenerate()
	direct := map[string]keys.Key{"alice": keys.MustGenerate(), "bob": keys.MustGenerate()}
	var addrs []string
	servers := map[string]*servertest.Server{}
	for range 2 {
		dir := t.TempDir()
		body := fmt.Sprintf("alice = %s\nbob = %s\n", direct["alice"].Encode(), direct["bob"].Encode())
		if err := os.WriteFile(filepath.Join(dir, "clients.keys"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s := servertest.Start(t, servertest.Options{Dir: dir, Extra: map[string]string{
			"CLIENT_KEYS_FILE": "clients.keys", "RELAY_SHARED_KEY": relayKey.Encode()}})
		addrs = append(addrs, s.Addr().String())
		servers[s.Addr().String()] = s
	}
	dir := t.TempDir()
	viaRelay := map[string]keys.Key{"alice": keys.MustGenerate(), "bob": keys.MustGenerate()}
	keysFile := filepath.Join(dir, "clients.keys")
	write := func(names ...string) {
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "%s = %s\n", n, viaRelay[n].Encode())
		}
		if err := os.WriteFile(keysFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice", "bob")
	r := startRelay(t, writeRelayConfig(t, dir, addrs, relayKey.Encode(), map[string]string{"CLIENT_KEYS_FILE": "clients.keys"}))
	for _, b := range r.Backends().Backends {
		if !b.TakesIdentities {
			t.Errorf("backend %s does not take identities", b.Address)
		}
	}
	dial := func(name string) *client.Client {
		c, err := client.Dial(ctx, client.Config{Address: r.Addr().String(), Key: viaRelay[name].Encode()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob := dial("alice"), dial("bob")
	var ids []string
	onBackend := map[string]bool{}
	where := map[string]string{}
	for i := range 4 {
		j := submitAndFetch(t, alice, writeInput(t, dir, fmt.Sprintf("a%d.7", i), 1000, byte(i)))
		ids = append(ids, j.JobID)
		onBackend[j.Backend] = true
		where[j.JobID] = j.Backend
	}
	if len(onBackend) != 2 {
		t.Errorf("alice's jobs are on %v, want both backends", onBackend)
	}
	if q, err := bob.Queue(ctx); err != nil || len(q) != 0 {
		t.Errorf("bob's queue through the relay: %v, %v; want empty", q, err)
	}
	if q, err := alice.Queue(ctx); err != nil || len(q) != 4 {
		t.Errorf("alice's queue through the relay: %d jobs, %v; want 4", len(q), err)
	}
	for _, id := range ids {
		_, err := bob.Job(ctx, id)
		_, uerr := bob.Job(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa")
		if err == nil || uerr == nil || err.Error() != strings.ReplaceAll(uerr.Error(), "aaaaaaaaaaaaaaaaaaaaaaaaaa", id) {
			t.Errorf("bob's status of alice's job %s: %v; of an unknown job: %v", id, err, uerr)
		}
		if _, err := bob.Cancel(ctx, id); !client.IsCode(err, client.CodeNotFound) {
			t.Errorf("bob's cancel of alice's job %s: %v", id, err)
		}
	}

	// The backend of alice's first job goes down: bob is not told that the
	// job exists (as for an unknown job), alice is told its backend is down.
	down := where[ids[0]]
	servers[down].Stop(t)
	servertest.Eventually(t, 10*time.Second, "the stopped backend marked down", func() bool { return !r.healthy(t, down) })
	_, err := bob.Job(ctx, ids[0])
	_, uerr := bob.Job(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	if err == nil || uerr == nil || err.Error() != strings.ReplaceAll(uerr.Error(), "aaaaaaaaaaaaaaaaaaaaaaaaaa", ids[0]) {
		t.Errorf("bob's status of alice's job on a down backend: %v; of an unknown job: %v", err, uerr)
	}
	if _, err := alice.Job(ctx, ids[0]); !client.IsCode(err, client.CodeUnavailable) {
		t.Errorf("alice's status of her job on a down backend: %v, want unavailable", err)
	}
	alive := ids[0]
	for _, id := range ids {
		if where[id] != down {
			alive = id
		}
	}

	// bob is removed at the relay: his session ends, alice's goes on.
	write("alice")
	start := time.Now()
	var rep *protocol.ReloadReply
	rep, err = r.ReloadClientKeys()
	if err != nil || len(rep.Removed) != 1 || rep.ClosedSessions != 1 {
		t.Fatalf("relay reload without bob: %+v, %v", rep, err)
	}
	if _, err := bob.Queue(ctx); err == nil {
		t.Error("bob's session through the relay goes on after his removal")
	}
	t.Logf("bob's session ended within %v of the reload", time.Since(start))
	if _, err := alice.Job(ctx, alive); err != nil {
		t.Errorf("alice after bob's removal: %v", err)
	}
	if _, err := client.Dial(ctx, client.Config{Address: r.Addr().String(), Key: viaRelay["bob"].Encode()}); err == nil {
		t.Error("bob connects to the relay after his removal")
	}
}
