package config_test

import (
	"testing"

	"github.com/recon-mri/recon/internal/config"
)

func TestAuditLogPath(t *testing.T) {
	tests := []struct {
		cfg  config.Server
		want string
	}{
		{config.Server{LogFile: "/var/log/recon/recon.log", StateDir: "/srv/state"}, "/var/log/recon/recon_audit.jsonl"},
		{config.Server{LogFile: "", StateDir: "/srv/state"}, "/srv/state/recon_audit.jsonl"},
		{config.Server{AuditLogFile: "/audit/a.jsonl", LogFile: "/var/log/recon.log"}, "/audit/a.jsonl"},
	}
	for _, tt := range tests {
		if got := tt.cfg.AuditLogPath(); got != tt.want {
			t.Errorf("AuditLogPath(AUDIT_LOG_FILEPATH %q, LOG_FILEPATH %q) = %q, want %q", tt.cfg.AuditLogFile, tt.cfg.LogFile, got, tt.want)
		}
	}
}
