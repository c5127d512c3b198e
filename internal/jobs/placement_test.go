package jobs_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/recon-mri/recon/internal/jobs"
)

// TestPlacementSurvivesReopen: a placement recorded for a running job is
// read back after the store is closed and opened again (a restarted
// server), is replaced by a later one, refused for a job that is not
// running, and gone once cleared.
func TestPlacementSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	queued := mustCreate(t, s, &jobs.Job{})
	if err := s.SetPlacement(ctx, queued.ID, 1, "7"); !errors.Is(err, jobs.ErrState) {
		t.Errorf("SetPlacement of a queued job = %v, want ErrState", err)
	}
	j := mustClaim(t, s)
	if err := s.SetPlacement(ctx, j.ID, 1, "41"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPlacement(ctx, j.ID, 2, "42"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	p, err := s.GetPlacement(ctx, j.ID)
	if err != nil || p.Attempt != 2 || p.Ref != "42" || p.RecordedAt.IsZero() {
		t.Fatalf("GetPlacement after reopen = %+v, %v; want attempt 2, ref 42", p, err)
	}
	if ps, err := s.Placements(ctx); err != nil || len(ps) != 1 || ps[0].JobID != j.ID {
		t.Errorf("Placements = %+v, %v; want the one of %s", ps, err, j.ID)
	}
	if err := s.ClearPlacement(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPlacement(ctx, j.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("GetPlacement after ClearPlacement = %v, want ErrNotFound", err)
	}
}
