package jobs_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
)

// TestPACSDeliveryRecord: a delivery's instances through sends, outcomes,
// a retry, its end and a restart; what the PACS confirmed never changes
// again, and the record survives reopening the store.
func TestPACSDeliveryRecord(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	s := openStore(t, path)
	j := mustCreate(t, s, &jobs.Job{})
	mustClaim(t, s)
	if err := s.Finish(ctx, j.ID, jobs.Succeeded, nil, "", []jobs.File{{Name: "a.dcm"}, {Name: "b.dcm"}}); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.SucceededWithoutPACSDelivery(ctx, time.Now().Add(-time.Hour)); err != nil || len(ids) != 1 || ids[0] != j.ID {
		t.Fatalf("SucceededWithoutPACSDelivery = %v, %v", ids, err)
	}
	insts := []jobs.PACSInstance{
		{Dest: "dicomweb", File: "a.dcm", SOPClassUID: "1.2", SOPInstanceUID: "2.25.1"},
		{Dest: "dicomweb", File: "b.dcm", SOPClassUID: "1.2", SOPInstanceUID: "2.25.2"},
	}
	if created, err := s.CreatePACSDelivery(ctx, j.ID, insts); err != nil || !created {
		t.Fatalf("CreatePACSDelivery = %v, %v", created, err)
	}
	if created, err := s.CreatePACSDelivery(ctx, j.ID, insts); err != nil || created {
		t.Fatalf("second CreatePACSDelivery = %v, %v; want the first kept", created, err)
	}
	if ids, _ := s.SucceededWithoutPACSDelivery(ctx, time.Now().Add(-time.Hour)); len(ids) != 0 {
		t.Errorf("SucceededWithoutPACSDelivery after create = %v", ids)
	}
	if err := s.RecordPACSSends(ctx, j.ID, "dicomweb", []string{"a.dcm", "b.dcm"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordPACSOutcomes(ctx, j.ID, "dicomweb", []jobs.PACSOutcome{
		{File: "a.dcm", State: jobs.DeliveryDelivered},
		{File: "b.dcm", State: jobs.DeliveryFailed, Error: "refused"},
	}); err != nil {
		t.Fatal(err)
	}
	// A confirmed instance does not change again.
	s.RecordPACSOutcomes(ctx, j.ID, "dicomweb", []jobs.PACSOutcome{{File: "a.dcm", State: jobs.DeliveryFailed, Error: "x"}})
	if err := s.RestartPACSDelivery(ctx, j.ID); !errors.Is(err, jobs.ErrState) {
		t.Errorf("restart of a pending delivery = %v, want ErrState", err)
	}
	if err := s.EndPACSDelivery(ctx, j.ID, jobs.DeliveryFailed, "b.dcm refused"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.PACSDeliveryPending(ctx, j.ID); ok {
		t.Error("an ended delivery is pending")
	}
	s.Close()

	s = openStore(t, path)
	d, err := s.GetPACSDelivery(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	a, b := d.Instances[0], d.Instances[1]
	if d.State != jobs.DeliveryFailed || d.Error != "b.dcm refused" || d.EndedAt.IsZero() ||
		a.State != jobs.DeliveryDelivered || a.Sends != 1 || a.ConfirmedAt.IsZero() ||
		b.State != jobs.DeliveryFailed || b.Error != "refused" || b.Sends != 1 {
		t.Fatalf("after reopening: %+v", d)
	}
	if err := s.RestartPACSDelivery(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	d, _ = s.GetPACSDelivery(ctx, j.ID)
	if d.State != jobs.DeliveryPending || d.Instances[0].State != jobs.DeliveryDelivered || d.Instances[1].State != jobs.DeliveryPending {
		t.Errorf("after restart: %+v", d)
	}
	next := time.Now().Add(time.Hour)
	if err := s.SchedulePACSRetry(ctx, j.ID, next, "down"); err != nil {
		t.Fatal(err)
	}
	ids, due, err := s.PendingPACSDeliveries(ctx)
	if err != nil || len(ids) != 1 || !due[0].Equal(time.Unix(0, next.UnixNano()).UTC()) {
		t.Errorf("PendingPACSDeliveries = %v, %v, %v", ids, due, err)
	}
	if _, err := s.GetPACSDelivery(ctx, jobs.NewID()); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("delivery of an unknown job: %v", err)
	}
}
