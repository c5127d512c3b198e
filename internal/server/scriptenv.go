package server

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/recon-mri/recon/internal/config"
)

// Variables every run of the script gets from the server, besides the
// job's own (package runner).
const (
	// EnvReconBin names the recon binary the server runs as, so that a
	// script can call `recon dicom` without finding recon on PATH.
	EnvReconBin = "RECON_BIN"
	// EnvDICOMUIDRoot carries DICOM_UID_ROOT, the root of the UIDs `recon
	// dicom` makes.
	EnvDICOMUIDRoot = "RECON_DICOM_UID_ROOT"
)

// scriptEnv returns the server's variables for the script: RECON_BIN (when
// the server's own executable can be found) and RECON_DICOM_UID_ROOT.
func scriptEnv(cfg *config.Server, log *slog.Logger) []string {
	var env []string
	if exe, err := os.Executable(); err != nil {
		log.Warn("cannot find the server's own executable: scripts get no "+EnvReconBin, "err", err)
	} else {
		if p, err := filepath.EvalSymlinks(exe); err == nil {
			exe = p
		}
		env = append(env, EnvReconBin+"="+exe)
	}
	if cfg.DICOMUIDRoot != "" {
		env = append(env, EnvDICOMUIDRoot+"="+cfg.DICOMUIDRoot)
	}
	return env
}
