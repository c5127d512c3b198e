package config_test

import (
	"fmt"
	"testing"

	"github.com/recon-mri/recon/internal/config"
)

// TestMetricsAddressLoopback checks that METRICS_ADDRESS, an endpoint
// without a key, is accepted on loopback only, and that any other host is a
// config error naming the file and line.
func TestMetricsAddressLoopback(t *testing.T) {
	base := lines("SHARED_KEY = "+testKeyText(1), "SERVER_ADMIN_SHARED_KEY = "+testKeyText(2)) // lines 1 and 2
	const notLoopback = `{F}:3: METRICS_ADDRESS must be on loopback (127.0.0.1:PORT, [::1]:PORT, localhost:PORT or :PORT): the endpoint has no key (got %q)`
	tests := []struct {
		value   string
		wantErr string // "" when accepted; %q is the value
	}{
		{value: ""},
		{value: "127.0.0.1:9464"},
		{value: "127.0.0.1:0"},
		{value: "127.1.2.3:9464"},
		{value: "[::1]:9464"},
		{value: "[::ffff:127.0.0.1]:9464"},
		{value: "localhost:9464"},
		{value: "LocalHost:9464"},
		{value: ":9464"},
		{value: "0.0.0.0:0", wantErr: notLoopback},
		{value: "0.0.0.0:9464", wantErr: notLoopback},
		{value: "[::]:9464", wantErr: notLoopback},
		{value: "192.168.1.10:9464", wantErr: notLoopback},
		{value: "[fe80::1%lo]:9464", wantErr: notLoopback},
		{value: "[::ffff:10.0.0.1]:9464", wantErr: notLoopback},
		{value: "metrics.example.org:9464", wantErr: notLoopback},
		{value: "localhost.example.org:9464", wantErr: notLoopback},
		{value: "127.0.0.1", wantErr: `{F}:3: METRICS_ADDRESS must be host:port, or empty (got %q)`},
		{value: "127.0.0.1:65536", wantErr: `{F}:3: METRICS_ADDRESS must be host:port with a port from 0 to 65535 (got %q)`},
	}
	for _, tt := range tests {
		path := writeOpts(t, t.TempDir(), "recon.opts", base+"METRICS_ADDRESS = "+tt.value+"\n")
		cfg, _, err := config.LoadServer(path)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("METRICS_ADDRESS = %s: error %v, want none", tt.value, err)
			} else if cfg.MetricsAddress != tt.value {
				t.Errorf("METRICS_ADDRESS = %s: MetricsAddress = %q", tt.value, cfg.MetricsAddress)
			}
			continue
		}
		want := expand(fmt.Sprintf(tt.wantErr, tt.value), path)
		if err == nil || err.Error() != want {
			t.Errorf("METRICS_ADDRESS = %s: error %v, want %v", tt.value, err, want)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"", true}, {"localhost", true}, {"127.0.0.1", true}, {"127.255.0.1", true}, {"::1", true},
		{"::ffff:127.0.0.1", true}, {"0.0.0.0", false}, {"::", false}, {"10.0.0.1", false},
		{"example.org", false}, {"fe80::1%lo", false}, {"::1%lo", false},
	} {
		if got := config.IsLoopbackHost(tt.host); got != tt.want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}
