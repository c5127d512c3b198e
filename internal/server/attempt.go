package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/recon-mri/recon/internal/runner"
)

// attemptPrefix names the directory a job's script writes into during one
// attempt (.attempt-<job id>-<attempt>). Only once the runner has killed
// every process of the attempt does it become the job's output directory:
// a process left by an earlier attempt, which knows only its own attempt's
// directory, cannot write into the results of a later one.
const attemptPrefix = ".attempt-"

func (e *localExecutor) attemptDir(id string, attempt int) string {
	return filepath.Join(e.cfg.OutputBaseDir, attemptPrefix+id+"-"+strconv.Itoa(attempt))
}

// instanceOf names the runs of the server whose state is in stateDir, in
// the marker each of their processes carries (runner.Spec.Instance): a
// digest of the directory's absolute path, so that two servers on one
// machine never take each other's processes for their own.
func instanceOf(stateDir string) string {
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	sum := sha256.Sum256([]byte(stateDir))
	return "recon-" + hex.EncodeToString(sum[:8])
}

// promoteAttempt makes an attempt's directory, whose processes are all
// dead, the job's output directory, in place of any older one (left by an
// attempt that ended just before a crash).
func (e *localExecutor) promoteAttempt(id, dir string) error {
	out := e.outputDir(id)
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("remove earlier output: %w", err)
	}
	if err := os.Rename(dir, out); err != nil {
		return fmt.Errorf("move attempt output: %w", err)
	}
	return nil
}

// recover kills what the runs of an earlier server process on this state
// left alive (a script dies with the server; what it started need not),
// then removes their attempt directories. New calls it before any job
// runs. Processes that cannot be killed are logged, and the server starts
// anyway (a restart must always work): their directories are gone, and the
// next attempt of their job writes into a new one.
func (e *localExecutor) recover(ctx context.Context) error {
	if err := runner.KillStale(ctx, e.instance, e.log); err != nil {
		e.log.Error("processes of an earlier run could not be killed", "err", err)
	}
	entries, err := os.ReadDir(e.cfg.OutputBaseDir)
	if err != nil {
		return fmt.Errorf("read RECON_JOB_OUTPUT_BASE_DIR: %w", err)
	}
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), attemptPrefix) {
			e.log.Info("removing the output of an interrupted attempt", "dir", ent.Name())
			if err := os.RemoveAll(filepath.Join(e.cfg.OutputBaseDir, ent.Name())); err != nil {
				e.log.Warn("remove the output of an interrupted attempt", "dir", ent.Name(), "err", err)
			}
		}
	}
	return nil
}
