package main

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
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

func TestMetricsOffByDefault(t *testing.T) {
	dir := t.TempDir()
	serverOpts(t, dir, servertest.WriteScript(t, dir, "s.sh", servertest.CopyScript))
	srv := startServer(t, dir, "recon.opts")
	if strings.Contains(srv.stderr.String(), "metrics") {
		t.Errorf("metrics endpoint started without METRICS_ADDRESS:\n%s", srv.stderr)
	}
}
