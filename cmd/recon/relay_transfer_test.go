package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// relayClients is `recon relay-admin clients --json`.
func relayClients(t *testing.T, dir string) []relayClientJSON {
	t.Helper()
	cl, err := tryRelayClients(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// tryRelayClients runs `recon relay-admin clients --json`, for use off the
// test's goroutine (it calls no t.Fatal).
func tryRelayClients(dir string) ([]relayClientJSON, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, reconBin, "relay-admin", "clients", "--opts", "admin.opts", "--json")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("relay-admin clients --json: %w", err)
	}
	var cl struct {
		Clients []relayClientJSON `json:"clients"`
	}
	if err := json.Unmarshal(out, &cl); err != nil {
		return nil, fmt.Errorf("relay-admin clients --json: %w\n%s", err, out)
	}
	for _, c := range cl.Clients {
		if c.BytesIn == nil || c.BytesOut == nil {
			return nil, fmt.Errorf("relay-admin clients --json: a client without bytes_in or bytes_out:\n%s", out)
		}
	}
	return cl.Clients, nil
}

type relayClientJSON struct {
	Address  string `json:"address"`
	Request  string `json:"request"`
	JobID    string `json:"job_id"`
	Backend  string `json:"backend"`
	Requests int64  `json:"requests"`
	BytesIn  *int64 `json:"bytes_in"`
	BytesOut *int64 `json:"bytes_out"`
}

// TestRelayAdminClientsTransfer follows one client's bytes in
// `recon relay-admin clients`: during its upload (the submit request, with
// some but not all of the file in), after it (the whole file in), and
// after the download of its result (the whole result out); and the human
// table lists the connected client with its bytes.
func TestRelayAdminClientsTransfer(t *testing.T) {
	const size = 8 << 20
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	key := keys.MustGenerate().Encode()
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
	backend := s.Addr().String()
	clientKey, adminKey := relayOpts(t, dir, []string{backend}, key)
	rp := startRelayProc(t, dir, "relay.opts")
	relayAdminOpts(t, filepath.Join(dir, "admin.opts"), rp.adminAddr, adminKey)
	in := filepath.Join(dir, "scan.7")
	writeRandomFile(t, in, size, 7)

	c, err := client.Dial(ctx, client.Config{Address: rp.clientAddr, Key: clientKey, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// one is the one client, once its request has ended (the relay ends
	// it just after sending the reply).
	one := func(what string) relayClientJSON {
		t.Helper()
		var cl []relayClientJSON
		servertest.Eventually(t, 20*time.Second, "the relay ends the client's request "+what, func() bool {
			cl = relayClients(t, dir)
			return len(cl) != 1 || cl[0].Request == ""
		})
		if len(cl) != 1 {
			t.Fatalf("relay-admin clients %s: %d clients, want 1: %+v", what, len(cl), cl)
		}
		return cl[0]
	}

	// During the upload: Progress runs in the send path (on a goroutine of
	// its own), so the upload waits while the relay is asked, until the
	// relay has passed on the first bytes sent.
	var once sync.Once
	var during []relayClientJSON
	var duringErr error
	progress := func(done, total int64) {
		if done == 0 || done >= total {
			return
		}
		once.Do(func() {
			deadline := time.Now().Add(20 * time.Second)
			for wait := time.Millisecond; time.Now().Before(deadline); wait = min(2*wait, 100*time.Millisecond) {
				during, duringErr = tryRelayClients(dir)
				if duringErr != nil || (len(during) == 1 && *during[0].BytesIn > 0) {
					return
				}
				time.Sleep(wait) // poll interval
			}
		})
	}
	job, err := c.Submit(ctx, []string{in}, &client.SubmitOptions{Progress: progress, Reconnects: -1})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if duringErr != nil {
		t.Fatal(duringErr)
	}
	if len(during) != 1 {
		t.Fatalf("relay-admin clients during the upload: %+v, want one client", during)
	}
	if d := during[0]; d.Request != "submit" || *d.BytesIn <= 0 || *d.BytesIn >= size || *d.BytesOut != 0 || d.Backend != backend {
		t.Errorf("client during its upload: %+v; want request submit to %s, some of the %d bytes in, none out", d, backend, size)
	}
	after := one("after the upload")
	if *after.BytesIn != size || *after.BytesOut != 0 || !strings.HasPrefix(after.Address, "127.0.0.1:") {
		t.Errorf("client after its upload: %+v; want %d bytes in, 0 out, from 127.0.0.1", after, size)
	}

	if j, err := c.Wait(ctx, job.JobID, nil); err != nil || j.State != "succeeded" {
		t.Fatalf("wait: %+v, %v", j, err)
	}
	_, files, err := c.Fetch(ctx, job.JobID, filepath.Join(dir, "out"), nil)
	if err != nil || len(files) != 1 || files[0].Size != size {
		t.Fatalf("fetch: %+v, %v", files, err)
	}
	fetched := one("after the download")
	if *fetched.BytesIn != size || *fetched.BytesOut != size || fetched.Requests != 4 {
		t.Errorf("client after its download: %+v; want %d bytes in, %d out, 4 requests (hello, submit, wait, fetch)", fetched, size, size)
	}

	// The human table lists it, with its bytes.
	r := runRecon(t, dir, "relay-admin", "clients", "--opts", "admin.opts")
	line := lineOf(r.stdout, fetched.Address)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ADDRESS") || strings.Count(line, "8.0 MiB") != 2 || !strings.Contains(line, " default ") {
		t.Errorf("relay-admin clients: exit %d; want the header and the client's line with 8.0 MiB in and out:\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, h := range []string{"IDENTITY", "CONNECTED SINCE", "REQUESTS", "BYTES IN", "BYTES OUT", "CURRENT REQUEST"} {
		if !strings.Contains(r.stdout, h) {
			t.Errorf("relay-admin clients: no %s column:\n%s", h, r.stdout)
		}
	}
	c.Close()
	servertest.Eventually(t, 20*time.Second, "the client leaves the list", func() bool { return len(relayClients(t, dir)) == 0 })
}

// TestRelayCLIOutsideTrustedClientIPs: with TRUSTED_CLIENT_IPS =
// 10.0.0.0/8, recon commands from 127.0.0.1 with the right key are refused
// with a clear error, and the relay logs each refusal; relay-admin, which
// TRUSTED_CLIENT_IPS does not concern, works.
func TestRelayCLIOutsideTrustedClientIPs(t *testing.T) {
	dir := t.TempDir()
	key := keys.MustGenerate().Encode()
	s := servertest.Start(t, servertest.Options{Extra: map[string]string{"SHARED_KEY": key}})
	clientKey, adminKey := relayOpts(t, dir, []string{s.Addr().String()}, key)
	setOpt(t, filepath.Join(dir, "relay.opts"), "TRUSTED_CLIENT_IPS", "10.0.0.0/8")
	rp := startRelayProc(t, dir, "relay.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), rp.clientAddr, clientKey)
	relayAdminOpts(t, filepath.Join(dir, "admin.opts"), rp.adminAddr, adminKey)
	writeFile(t, filepath.Join(dir, "scan.7"), "k-space", 0o644)
	refusals := func() int {
		n := 0
		for _, rec := range servertest.LogRecords(t, filepath.Join(dir, "relay.log"), "connection refused: address not in the allow-list") {
			if p, _ := rec["peer"].(string); strings.HasPrefix(p, "127.0.0.1:") {
				n++
			}
		}
		return n
	}
	for i, args := range [][]string{
		{"status", "--opts", "client.opts"},
		{"submit", "--opts", "client.opts", "--no-wait", "scan.7"},
	} {
		r := runRecon(t, dir, args...)
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "not allowed") || !strings.Contains(r.stderr, rp.clientAddr) {
			t.Errorf("recon %v from 127.0.0.1 with TRUSTED_CLIENT_IPS = 10.0.0.0/8: exit %d\nstdout %q\nstderr %q", args, r.code, r.stdout, r.stderr)
		}
		servertest.Eventually(t, 20*time.Second, "the relay logs the refusal", func() bool { return refusals() >= i+1 })
	}
	if r := runRecon(t, dir, "relay-admin", "status", "--opts", "admin.opts"); r.code != 0 {
		t.Errorf("relay-admin status: exit %d\n%s", r.code, r.stderr)
	}
}

// TestRelayLargeDownloadFlatMemory fetches a large result from a server
// process through a relay process: the relay's peak RSS stays small
// whatever the size, as for an upload (TestRelayLargeFileFlatMemory).
func TestRelayLargeDownloadFlatMemory(t *testing.T) {
	const size = 256 << 20
	dir := t.TempDir()
	sdir := filepath.Join(dir, "server")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := serverOpts(t, sdir, servertest.WriteScript(t, sdir, "s.sh", "#!/bin/sh\nhead -c 268435456 /dev/zero > \"$3/big.out\"\n"))
	srv := startServer(t, sdir, "recon.opts")
	clientKey, _ := relayOpts(t, dir, []string{srv.clientAddr}, key)
	rp := startRelayProc(t, dir, "relay.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), rp.clientAddr, clientKey)
	writeFile(t, filepath.Join(dir, "small.7"), "k-space", 0o644)
	before := rp.peakRSS(t)
	start := time.Now()
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--json", "--output", "out", "small.7")
	elapsed := time.Since(start)
	if r.code != 0 {
		t.Fatalf("submit and download of a %d MiB result through the relay: exit %d\n%s", size>>20, r.code, r.stderr)
	}
	fi, err := os.Stat(filepath.Join(dir, "out", "big.out"))
	if err != nil || fi.Size() != size {
		t.Fatalf("downloaded result: %v, %v; want %d bytes", fi, err, size)
	}
	peak := rp.peakRSS(t)
	t.Logf("%d MiB result through the relay in %v (whole command); relay peak RSS %.1f MiB (%.1f MiB before)",
		size>>20, elapsed.Round(time.Millisecond), float64(peak)/(1<<20), float64(before)/(1<<20))
	if peak > 64<<20 {
		t.Errorf("relay peak RSS %.1f MiB after a %d MiB download, want at most 64 MiB", float64(peak)/(1<<20), size>>20)
	}
}
