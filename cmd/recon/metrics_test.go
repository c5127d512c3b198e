package main

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

var metricsRE = regexp.MustCompile(`metrics on (http://\S+)`)

func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	key := serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "METRICS_ADDRESS = 127.0.0.1:0")
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	var url string
	servertest.Eventually(t, 10*time.Second, "metrics address printed", func() bool {
		m := metricsRE.FindStringSubmatch(srv.stderr.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	})
	writeFile(t, filepath.Join(dir, "P1.7"), strings.Repeat("x", 4096), 0o644)
	if r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "P1.7"); r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`recon_jobs{state="succeeded"} 1`,
		`recon_queue_depth 0`,
		`recon_workers 1`,
		`recon_workers_busy 0`,
		`recon_workers_paused 0`,
		`recon_job_duration_seconds_count{state="succeeded"} 1`,
		`recon_received_bytes_total 4096`,
		`recon_sent_bytes_total 4096`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMetricsOffByDefault checks that without METRICS_ADDRESS there is no
// metrics endpoint. The server prints its metrics line before the "clients
// on" line that startServer waits for, so its absence here is final; and
// the process listens on the client and admin ports and nothing else.
func TestMetricsOffByDefault(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	if strings.Contains(srv.stderr.String(), "metrics") {
		t.Errorf("metrics endpoint started without METRICS_ADDRESS:\n%s", srv.stderr)
	}
	if runtime.GOOS != "linux" {
		return // listeningSockets reads /proc
	}
	got := listeningSockets(t, srv.cmd.Process.Pid)
	want := []string{srv.clientAddr, srv.adminAddr}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("server listens on %v, want the client and admin addresses %v only", got, want)
	}
}

// TestMetricsLineBeforeClientsLine checks the order TestMetricsOffByDefault
// relies on: with METRICS_ADDRESS, the metrics line is out by the time the
// "clients on" line is.
func TestMetricsLineBeforeClientsLine(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript), "METRICS_ADDRESS = 127.0.0.1:0")
	srv := startServer(t, dir, "recon.opts")
	m := metricsRE.FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("no metrics line before the clients line:\n%s", srv.stderr)
	}
	if runtime.GOOS != "linux" {
		return
	}
	got := listeningSockets(t, srv.cmd.Process.Pid)
	want := []string{srv.clientAddr, srv.adminAddr, strings.TrimSuffix(strings.TrimPrefix(m[1], "http://"), "/metrics")}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("server listens on %v, want %v", got, want)
	}
}

// listeningSockets returns the addresses the TCP sockets of process pid
// listen on, read from /proc: its socket inodes from /proc/PID/fd, their
// state and address from /proc/PID/net/tcp and tcp6.
func listeningSockets(t *testing.T, pid int) []string {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			if table == "tcp6" && errors.Is(err, fs.ErrNotExist) {
				continue // no IPv6
			}
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			out = append(out, procAddr(t, f[1]))
		}
	}
	return out
}

// procAddr decodes an address of /proc/net/tcp: hex IP, in 32-bit words of
// host byte order, ':' and hex port.
func procAddr(t *testing.T, s string) string {
	t.Helper()
	h, p, _ := strings.Cut(s, ":")
	ipb, err := hex.DecodeString(h)
	port, perr := strconv.ParseUint(p, 16, 16)
	if err != nil || perr != nil || len(ipb)%4 != 0 {
		t.Fatalf("bad /proc/net/tcp address %q", s)
	}
	for i := 0; i < len(ipb); i += 4 {
		binary.BigEndian.PutUint32(ipb[i:], binary.NativeEndian.Uint32(ipb[i:]))
	}
	ip, _ := netip.AddrFromSlice(ipb)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
}
