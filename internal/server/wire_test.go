package server

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
)

// TestWireStatesMatchStore pins the wire's job states to the store's: the
// protocol package cannot import the store (it would bring SQLite into
// every client), so the two lists are written twice and must stay the
// same, state by state, terminal or not.
func TestWireStatesMatchStore(t *testing.T) {
	var got []protocol.JobState
	for _, s := range jobs.States() {
		w := wireState(s)
		got = append(got, w)
		if w.Terminal() != s.Terminal() {
			t.Errorf("state %s: terminal on the wire %v, in the store %v", s, w.Terminal(), s.Terminal())
		}
	}
	if diff := cmp.Diff(protocol.JobStates(), got); diff != "" {
		t.Errorf("wire states (-protocol +store):\n%s", diff)
	}
	for _, w := range protocol.JobStates() {
		if !jobs.State(w).Valid() {
			t.Errorf("wire state %q is not a store state", w)
		}
	}
}

// TestJobInfo checks the one conversion of a stored job to the wire.
func TestJobInfo(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 30, 0, 0, time.FixedZone("CET", 3600))
	exit := 3
	j := &jobs.Job{
		ID: "aaaaaaaaaaaaaaaaaaaaaaaaaa", SubmissionID: "sub", State: jobs.Failed,
		Files:   []jobs.File{{Name: "in.7", Size: 1, SHA256: "ab"}},
		Options: map[string]string{"k": "v"}, ClientAddr: "127.0.0.1:1",
		SubmittedAt: at, StartedAt: at.Add(time.Second), FinishedAt: at.Add(2 * time.Second),
		Attempts: 2, ExitCode: &exit, Error: "boom",
		Results:     []jobs.File{{Name: "out/a", Size: 2, SHA256: "cd"}},
		DeliveredAt: at.Add(3 * time.Second),
	}
	started, finished := at.Add(time.Second).UTC(), at.Add(2*time.Second).UTC()
	want := &protocol.JobInfo{
		JobID: j.ID, State: protocol.StateFailed, SubmittedAt: at.UTC(), StartedAt: &started, FinishedAt: &finished,
		Files:   []protocol.FileSum{{Name: "in.7", Size: 1, SHA256: "ab"}},
		Options: j.Options, Attempts: 2, ExitCode: &exit, Error: "boom",
		Results:   []protocol.FileSum{{Name: "out/a", Size: 2, SHA256: "cd"}},
		Delivered: true, ClientAddr: "127.0.0.1:1", SubmissionID: "sub",
	}
	if diff := cmp.Diff(want, jobInfo(j)); diff != "" {
		t.Errorf("jobInfo (-want +got):\n%s", diff)
	}
	queued := jobInfo(&jobs.Job{ID: j.ID, State: jobs.Queued, SubmittedAt: at})
	if queued.StartedAt != nil || queued.FinishedAt != nil || queued.Files != nil || queued.Results != nil || queued.Delivered || queued.ResultsGone {
		t.Errorf("jobInfo of a queued job = %+v, want no times, files or delivery", queued)
	}
}
