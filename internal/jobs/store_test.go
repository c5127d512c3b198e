package jobs_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/jobs"
)

// openStore opens the store at path and closes it when the test ends.
func openStore(t testing.TB, path string) *jobs.Store {
	t.Helper()
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newStore(t testing.TB) *jobs.Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "jobs.db"))
}

func intp(i int) *int { return &i }

func mustCreate(t testing.TB, s *jobs.Store, j *jobs.Job) *jobs.Job {
	t.Helper()
	got, created, err := s.Create(context.Background(), j)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !created {
		t.Fatalf("Create(%+v): created = false", j)
	}
	return got
}

// createN creates n jobs with numbered file names and returns their ids in
// creation order.
func createN(t testing.TB, s *jobs.Store, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustCreate(t, s, &jobs.Job{Files: []jobs.File{{Name: "f", Size: int64(i)}}}).ID
	}
	return ids
}

func mustGet(t testing.TB, s *jobs.Store, id string) *jobs.Job {
	t.Helper()
	j, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return j
}

func mustClaim(t testing.TB, s *jobs.Store) *jobs.Job {
	t.Helper()
	j, err := s.Claim(context.Background())
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return j
}

// checkTime fails unless got lies in [before, after].
func checkTime(t testing.TB, name string, got, before, after time.Time) {
	t.Helper()
	if got.Before(before) || got.After(after) {
		t.Errorf("%s = %v, want between %v and %v", name, got, before, after)
	}
}

func TestCreateGetRoundTrip(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	submitted := time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))
	in := &jobs.Job{
		ID:           jobs.NewID(),
		SubmissionID: "7d0b6c1e-submission",
		Files: []jobs.File{
			{Name: "meas_MID00042.dat", Size: 7 << 30, SHA256: strings.Repeat("ab", 32)},
			{Name: "empty.dat", Size: 0, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
			{Name: "ünïcödé 'quoted\" name.h5", Size: 1, SHA256: strings.Repeat("0", 64)},
		},
		Options:     map[string]string{"RESOLUTION": "1mm", "EMPTY": "", "JSON": `{"a":[1,2]}`},
		ClientAddr:  "[2001:db8::1]:5555",
		SubmittedAt: submitted,
		// Create ignores everything below.
		State:            jobs.Failed,
		StartedAt:        submitted,
		FinishedAt:       submitted,
		Attempts:         7,
		ExitCode:         intp(3),
		Error:            "ignored",
		Results:          []jobs.File{{Name: "ignored"}},
		DeliveredAt:      submitted,
		ResultsRemovedAt: submitted,
	}
	inBefore := *in
	want := &jobs.Job{
		ID:           in.ID,
		SubmissionID: in.SubmissionID,
		State:        jobs.Queued,
		Files:        in.Files,
		Options:      in.Options,
		ClientAddr:   in.ClientAddr,
		SubmittedAt:  submitted,
	}

	got, created, err := s.Create(ctx, in)
	if err != nil || !created {
		t.Fatalf("Create = _, %v, %v; want created", created, err)
	}
	if diff := cmp.Diff(&inBefore, in); diff != "" {
		t.Errorf("Create modified its argument (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Create returned (-want +got):\n%s", diff)
	}
	if got.SubmittedAt.Location() != time.UTC {
		t.Errorf("SubmittedAt location = %v, want UTC", got.SubmittedAt.Location())
	}
	check := func(step string) {
		t.Helper()
		got := mustGet(t, s, want.ID)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: Get (-want +got):\n%s", step, diff)
		}
		got, err := s.GetBySubmission(ctx, want.Identity, want.SubmissionID)
		if err != nil {
			t.Fatalf("%s: GetBySubmission: %v", step, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: GetBySubmission (-want +got):\n%s", step, diff)
		}
	}
	check("created")

	before := time.Now()
	claimed := mustClaim(t, s)
	checkTime(t, "StartedAt", claimed.StartedAt, before, time.Now())
	want.State, want.Attempts, want.StartedAt = jobs.Running, 1, claimed.StartedAt
	if diff := cmp.Diff(want, claimed); diff != "" {
		t.Errorf("Claim (-want +got):\n%s", diff)
	}
	check("claimed")

	results := []jobs.File{
		{Name: "image.nii", Size: 12345, SHA256: strings.Repeat("cd", 32)},
		{Name: "dicom/series1/IM0001.dcm", Size: 678, SHA256: strings.Repeat("ef", 32)},
	}
	before = time.Now()
	if err := s.Finish(ctx, want.ID, jobs.Succeeded, intp(0), "", results); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	got = mustGet(t, s, want.ID)
	checkTime(t, "FinishedAt", got.FinishedAt, before, time.Now())
	want.State, want.ExitCode, want.Results, want.FinishedAt = jobs.Succeeded, intp(0), results, got.FinishedAt
	check("finished")

	before = time.Now()
	if err := s.MarkDelivered(ctx, want.ID); err != nil {
		t.Fatalf("MarkDelivered: %v", err)
	}
	got = mustGet(t, s, want.ID)
	checkTime(t, "DeliveredAt", got.DeliveredAt, before, time.Now())
	want.DeliveredAt = got.DeliveredAt
	check("delivered")

	before = time.Now()
	if err := s.MarkResultsRemoved(ctx, want.ID); err != nil {
		t.Fatalf("MarkResultsRemoved: %v", err)
	}
	got = mustGet(t, s, want.ID)
	checkTime(t, "ResultsRemovedAt", got.ResultsRemovedAt, before, time.Now())
	want.ResultsRemovedAt = got.ResultsRemovedAt
	check("results removed")

	// Marking again keeps the first times.
	if err := s.MarkDelivered(ctx, want.ID); err != nil {
		t.Fatalf("MarkDelivered again: %v", err)
	}
	if err := s.MarkResultsRemoved(ctx, want.ID); err != nil {
		t.Fatalf("MarkResultsRemoved again: %v", err)
	}
	check("marked again")
}

func TestCreateDefaults(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	before := time.Now()
	got, created, err := s.Create(ctx, &jobs.Job{})
	if err != nil || !created {
		t.Fatalf("Create(empty job) = _, %v, %v; want created", created, err)
	}
	if !jobs.ValidID(got.ID) {
		t.Errorf("ID = %q, not valid", got.ID)
	}
	checkTime(t, "SubmittedAt", got.SubmittedAt, before, time.Now())
	want := &jobs.Job{ID: got.ID, State: jobs.Queued, SubmittedAt: got.SubmittedAt}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Create(empty job) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, mustGet(t, s, got.ID)); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	// Two jobs without submission id are two jobs.
	if _, created, err := s.Create(ctx, &jobs.Job{}); err != nil || !created {
		t.Errorf("second Create(empty job) = _, %v, %v; want created", created, err)
	}
	// Empty (not nil) collections stay empty.
	got = mustCreate(t, s, &jobs.Job{Files: []jobs.File{}, Options: map[string]string{}})
	if got.Files == nil || len(got.Files) != 0 || got.Options == nil || len(got.Options) != 0 {
		t.Errorf("Create(empty collections) = Files %#v, Options %#v; want empty, non-nil", got.Files, got.Options)
	}
}

func TestCreateRejects(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	existing := mustCreate(t, s, &jobs.Job{})
	tests := []struct {
		name    string
		job     *jobs.Job
		wantErr error
	}{
		{"nil job", nil, nil},
		{"invalid id", &jobs.Job{ID: "../etc"}, nil},
		{"uppercase id", &jobs.Job{ID: strings.ToUpper(jobs.NewID())}, nil},
		{"duplicate id", &jobs.Job{ID: existing.ID}, jobs.ErrExists},
		{"time before 1970", &jobs.Job{SubmittedAt: time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC)}, nil},
		{"time after 2200", &jobs.Job{SubmittedAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, created, err := s.Create(ctx, tt.job)
			if err == nil || j != nil || created {
				t.Fatalf("Create = %v, %v, %v; want error", j, created, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Create error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if n, err := s.Counts(ctx); err != nil || n[jobs.Queued] != 1 {
		t.Errorf("Counts = %v, %v; want 1 queued", n, err)
	}
}

func TestCreateIdempotentBySubmissionID(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	first := mustCreate(t, s, &jobs.Job{SubmissionID: "retry-me", Files: []jobs.File{{Name: "a"}}})

	// A retry with other fields gets the first job back, whatever its state.
	for _, step := range []string{"queued", "running", "finished"} {
		switch step {
		case "running":
			mustClaim(t, s)
		case "finished":
			if err := s.Finish(ctx, first.ID, jobs.Failed, intp(1), "boom", nil); err != nil {
				t.Fatal(err)
			}
		}
		want := mustGet(t, s, first.ID)
		got, created, err := s.Create(ctx, &jobs.Job{SubmissionID: "retry-me", Files: []jobs.File{{Name: "b"}}})
		if err != nil || created {
			t.Fatalf("%s: retried Create = _, %v, %v; want not created", step, created, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: retried Create (-want +got):\n%s", step, diff)
		}
	}
	// Even with an explicit, different id.
	got, created, err := s.Create(ctx, &jobs.Job{ID: jobs.NewID(), SubmissionID: "retry-me"})
	if err != nil || created || got.ID != first.ID {
		t.Errorf("retried Create with new id = %v, %v, %v; want job %s, not created", got, created, err, first.ID)
	}
	// Another submission id is another job.
	other := mustCreate(t, s, &jobs.Job{SubmissionID: "other"})
	if other.ID == first.ID {
		t.Errorf("different submission ids gave the same job %s", other.ID)
	}
	n, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total := n[jobs.Queued] + n[jobs.Failed]; total != 2 {
		t.Errorf("Counts = %v, want 2 jobs in all", n)
	}
}

func TestCreateConcurrentSameSubmission(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	const n = 20
	type result struct {
		job     *jobs.Job
		created bool
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			j, created, err := s.Create(ctx, &jobs.Job{SubmissionID: "same", ClientAddr: "client"})
			results[i] = result{j, created, err}
		})
	}
	close(start)
	wg.Wait()

	createdCount := 0
	var id string
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("creator %d: %v", i, r.err)
		}
		if r.created {
			createdCount++
		}
		if id == "" {
			id = r.job.ID
		}
		if r.job.ID != id {
			t.Errorf("creator %d got job %s, another got %s", i, r.job.ID, id)
		}
	}
	if createdCount != 1 {
		t.Errorf("%d creators got created = true, want 1", createdCount)
	}
	if got, err := s.QueuedCount(ctx); err != nil || got != 1 {
		t.Errorf("QueuedCount = %d, %v; want 1", got, err)
	}
}

func TestGetNotFound(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	mustCreate(t, s, &jobs.Job{SubmissionID: "x"})
	if _, err := s.Get(ctx, jobs.NewID()); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "' OR 1=1 --"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get(injection) error = %v, want ErrNotFound", err)
	}
	for _, sid := range []string{"", "y", "X"} {
		if _, err := s.GetBySubmission(ctx, "", sid); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("GetBySubmission(%q) error = %v, want ErrNotFound", sid, err)
		}
	}
}

// Operations of the state machine test, each on one job id.
var stateOps = []struct {
	name string
	do   func(ctx context.Context, s *jobs.Store, id string) error
}{
	{"finish succeeded", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, jobs.Succeeded, intp(0), "", []jobs.File{{Name: "r"}})
	}},
	{"finish failed", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, jobs.Failed, intp(2), "exit status 2", nil)
	}},
	{"finish cancelled", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, jobs.Cancelled, nil, "cancelled by admin", nil)
	}},
	{"finish queued", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, jobs.Queued, nil, "", nil)
	}},
	{"finish running", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, jobs.Running, nil, "", nil)
	}},
	{"finish bogus", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Finish(ctx, id, "bogus", nil, "", nil)
	}},
	{"cancel", func(ctx context.Context, s *jobs.Store, id string) error {
		_, err := s.Cancel(ctx, id)
		return err
	}},
	{"requeue", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.Requeue(ctx, id, "server shutting down")
	}},
	{"mark delivered", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.MarkDelivered(ctx, id)
	}},
	{"mark results removed", func(ctx context.Context, s *jobs.Store, id string) error {
		return s.MarkResultsRemoved(ctx, id)
	}},
}

// storeWithJobsIn returns a new store holding n jobs, all in state st.
func storeWithJobsIn(t *testing.T, st jobs.State, n int) (*jobs.Store, []string) {
	t.Helper()
	ctx := t.Context()
	s := newStore(t)
	ids := createN(t, s, n)
	if st == jobs.Queued {
		return s, ids
	}
	for range ids {
		mustClaim(t, s)
	}
	if st == jobs.Running {
		return s, ids
	}
	for _, id := range ids {
		if err := s.Finish(ctx, id, st, nil, "", nil); err != nil {
			t.Fatalf("Finish(%s, %s): %v", id, st, err)
		}
	}
	return s, ids
}

func TestStateMachine(t *testing.T) {
	// want is the state after the operation; "" means the operation
	// fails with ErrState and the job is unchanged.
	tests := map[jobs.State]map[string]jobs.State{
		jobs.Queued: {
			"finish succeeded":     "",
			"finish failed":        "",
			"finish cancelled":     "",
			"finish queued":        "",
			"finish running":       "",
			"finish bogus":         "",
			"cancel":               jobs.Cancelled,
			"requeue":              "",
			"mark delivered":       "",
			"mark results removed": "",
		},
		jobs.Running: {
			"finish succeeded":     jobs.Succeeded,
			"finish failed":        jobs.Failed,
			"finish cancelled":     jobs.Cancelled,
			"finish queued":        "",
			"finish running":       "",
			"finish bogus":         "",
			"cancel":               jobs.Running, // the caller stops it, then calls Finish
			"requeue":              jobs.Queued,
			"mark delivered":       "",
			"mark results removed": "",
		},
	}
	for _, st := range []jobs.State{jobs.Succeeded, jobs.Failed, jobs.Cancelled} {
		tests[st] = map[string]jobs.State{
			"finish succeeded":     "",
			"finish failed":        "",
			"finish cancelled":     "",
			"finish queued":        "",
			"finish running":       "",
			"finish bogus":         "",
			"cancel":               "",
			"requeue":              "",
			"mark delivered":       st,
			"mark results removed": st,
		}
	}

	for _, from := range allStates {
		t.Run(string(from), func(t *testing.T) {
			ctx := t.Context()
			s, ids := storeWithJobsIn(t, from, len(stateOps))
			for i, op := range stateOps {
				want, ok := tests[from][op.name]
				if !ok {
					t.Fatalf("no expectation for %s from %s", op.name, from)
				}
				id := ids[i]
				before := mustGet(t, s, id)
				err := op.do(ctx, s, id)
				after := mustGet(t, s, id)
				if want == "" {
					if !errors.Is(err, jobs.ErrState) {
						t.Errorf("%s from %s: error = %v, want ErrState", op.name, from, err)
					}
					if diff := cmp.Diff(before, after); diff != "" {
						t.Errorf("%s from %s failed but changed the job (-before +after):\n%s", op.name, from, diff)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s from %s: %v", op.name, from, err)
					continue
				}
				if after.State != want {
					t.Errorf("%s from %s: state = %s, want %s", op.name, from, after.State, want)
				}
				if want.Terminal() != !after.FinishedAt.IsZero() {
					t.Errorf("%s from %s: state %s with FinishedAt %v", op.name, from, after.State, after.FinishedAt)
				}
			}
			// Every operation on an unknown id is ErrNotFound.
			for _, op := range stateOps {
				if err := op.do(ctx, s, jobs.NewID()); !errors.Is(err, jobs.ErrNotFound) && !strings.HasPrefix(op.name, "finish ") {
					t.Errorf("%s of unknown job: error = %v, want ErrNotFound", op.name, err)
				}
			}
			if err := s.Finish(ctx, jobs.NewID(), jobs.Succeeded, nil, "", nil); !errors.Is(err, jobs.ErrNotFound) {
				t.Errorf("Finish of unknown job: error = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestStateErrorSaysFromAndTo(t *testing.T) {
	ctx := t.Context()
	s, ids := storeWithJobsIn(t, jobs.Succeeded, 1)
	err := s.Finish(ctx, ids[0], jobs.Failed, nil, "", nil)
	var se *jobs.StateError
	if !errors.As(err, &se) {
		t.Fatalf("Finish(succeeded job) error = %v, want a *StateError", err)
	}
	if se.From != jobs.Succeeded || se.To != jobs.Failed || se.ID != ids[0] {
		t.Errorf("StateError = %+v, want from succeeded to failed for %s", se, ids[0])
	}
	for _, want := range []string{"succeeded", "failed", ids[0]} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestClaimOnlyTakesQueued(t *testing.T) {
	for _, from := range allStates {
		t.Run(string(from), func(t *testing.T) {
			ctx := t.Context()
			s, ids := storeWithJobsIn(t, from, 1)
			before := mustGet(t, s, ids[0])
			j, err := s.Claim(ctx)
			if from == jobs.Queued {
				if err != nil || j.ID != ids[0] || j.State != jobs.Running || j.Attempts != 1 {
					t.Errorf("Claim = %+v, %v; want job %s running, attempt 1", j, err, ids[0])
				}
				return
			}
			if !errors.Is(err, jobs.ErrNoJob) || j != nil {
				t.Errorf("Claim with only a %s job = %v, %v; want ErrNoJob", from, j, err)
			}
			if diff := cmp.Diff(before, mustGet(t, s, ids[0])); diff != "" {
				t.Errorf("Claim changed a %s job (-before +after):\n%s", from, diff)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	ids := createN(t, s, 2)
	running := mustClaim(t, s)

	prev, err := s.Cancel(ctx, running.ID)
	if err != nil || prev != jobs.Running {
		t.Errorf("Cancel(running) = %s, %v; want running, nil", prev, err)
	}
	if got := mustGet(t, s, running.ID); got.State != jobs.Running {
		t.Errorf("after Cancel(running): state %s, want running", got.State)
	}
	if err := s.Finish(ctx, running.ID, jobs.Cancelled, nil, "cancelled by admin", nil); err != nil {
		t.Fatalf("Finish(cancelled): %v", err)
	}
	if got := mustGet(t, s, running.ID); got.State != jobs.Cancelled || got.Error != "cancelled by admin" || got.ExitCode != nil {
		t.Errorf("after Finish(cancelled): %+v", got)
	}

	before := time.Now()
	prev, err = s.Cancel(ctx, ids[1])
	if err != nil || prev != jobs.Queued {
		t.Errorf("Cancel(queued) = %s, %v; want queued, nil", prev, err)
	}
	got := mustGet(t, s, ids[1])
	if got.State != jobs.Cancelled || got.Error == "" || got.Attempts != 0 || !got.StartedAt.IsZero() {
		t.Errorf("after Cancel(queued): %+v", got)
	}
	checkTime(t, "FinishedAt", got.FinishedAt, before, time.Now())

	prev, err = s.Cancel(ctx, ids[1])
	if !errors.Is(err, jobs.ErrState) || prev != jobs.Cancelled {
		t.Errorf("Cancel(cancelled) = %s, %v; want cancelled, ErrState", prev, err)
	}
	if _, err := s.Cancel(ctx, jobs.NewID()); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Cancel(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Claim(ctx); !errors.Is(err, jobs.ErrNoJob) {
		t.Errorf("Claim after cancelling the queue: %v, want ErrNoJob", err)
	}
}

// queueIDs returns the ids of the queued jobs in queue order.
func queueIDs(t *testing.T, s *jobs.Store) []string {
	t.Helper()
	list, err := s.List(t.Context(), jobs.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range list {
		if j.State == jobs.Queued {
			ids = append(ids, j.ID)
		}
	}
	return ids
}

func TestFIFOAndQueuePosition(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	// Submission times run backwards: order is by insertion, not time.
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 5 {
		ids = append(ids, mustCreate(t, s, &jobs.Job{SubmittedAt: base.Add(-time.Duration(i) * time.Hour)}).ID)
	}
	for i, id := range ids {
		if pos, err := s.QueuePosition(ctx, id); err != nil || pos != i+1 {
			t.Errorf("QueuePosition(job %d) = %d, %v; want %d", i, pos, err, i+1)
		}
	}
	if diff := cmp.Diff(ids, queueIDs(t, s)); diff != "" {
		t.Errorf("queue order (-want +got):\n%s", diff)
	}

	// Claim the first two; requeue the first: it goes back to the front.
	a, b := mustClaim(t, s), mustClaim(t, s)
	if a.ID != ids[0] || b.ID != ids[1] {
		t.Fatalf("claimed %s, %s; want %s, %s", a.ID, b.ID, ids[0], ids[1])
	}
	if pos, err := s.QueuePosition(ctx, a.ID); err != nil || pos != 0 {
		t.Errorf("QueuePosition(running) = %d, %v; want 0", pos, err)
	}
	if pos, err := s.QueuePosition(ctx, ids[2]); err != nil || pos != 1 {
		t.Errorf("QueuePosition(third) = %d, %v; want 1", pos, err)
	}
	if err := s.Requeue(ctx, a.ID, "server shutting down"); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	got := mustGet(t, s, a.ID)
	if got.State != jobs.Queued || got.Attempts != 0 || !got.StartedAt.IsZero() || got.Error != "server shutting down" {
		t.Errorf("after Requeue: %+v", got)
	}
	if diff := cmp.Diff([]string{ids[0], ids[2], ids[3], ids[4]}, queueIDs(t, s)); diff != "" {
		t.Errorf("queue after requeue (-want +got):\n%s", diff)
	}
	// Cancel the middle one; the positions behind it move up.
	if _, err := s.Cancel(ctx, ids[3]); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int{ids[0]: 1, ids[2]: 2, ids[3]: 0, ids[4]: 3, ids[1]: 0} {
		if pos, err := s.QueuePosition(ctx, id); err != nil || pos != want {
			t.Errorf("QueuePosition(%s) = %d, %v; want %d", id, pos, err, want)
		}
	}
	if _, err := s.QueuePosition(ctx, jobs.NewID()); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("QueuePosition(unknown) error = %v, want ErrNotFound", err)
	}
	for _, want := range []string{ids[0], ids[2], ids[4]} {
		if got := mustClaim(t, s); got.ID != want {
			t.Errorf("Claim = %s, want %s", got.ID, want)
		}
	}
	if a := mustGet(t, s, ids[0]); a.Attempts != 1 {
		t.Errorf("requeued job claimed again: Attempts = %d, want 1 (the requeued start does not count)", a.Attempts)
	}
	if _, err := s.Claim(ctx); !errors.Is(err, jobs.ErrNoJob) {
		t.Errorf("Claim of empty queue: %v, want ErrNoJob", err)
	}
}

func TestConcurrentClaim(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	const nJobs, nWorkers = 200, 8
	ids := createN(t, s, nJobs)
	order := make(map[string]int, nJobs)
	for i, id := range ids {
		order[id] = i
	}

	claimed := make([][]int, nWorkers) // queue indexes each worker got, in its order
	errs := make(chan error, nWorkers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range nWorkers {
		wg.Go(func() {
			<-start
			for {
				j, err := s.Claim(ctx)
				if errors.Is(err, jobs.ErrNoJob) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				if j.State != jobs.Running || j.Attempts != 1 {
					errs <- errors.New("claimed job " + j.ID + " is " + string(j.State))
				}
				claimed[w] = append(claimed[w], order[j.ID])
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	count := make([]int, nJobs)
	for w, got := range claimed {
		if !slices.IsSorted(got) {
			t.Errorf("worker %d claimed out of queue order: %v", w, got)
		}
		for _, i := range got {
			count[i]++
		}
	}
	for i, c := range count {
		if c != 1 {
			t.Errorf("job %d claimed %d times, want 1", i, c)
		}
	}
	n, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[jobs.State]int{jobs.Running: nJobs, jobs.Queued: 0, jobs.Succeeded: 0, jobs.Failed: 0, jobs.Cancelled: 0}, n); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
}

func TestRecover(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ids := createN(t, s, 5) // a b c d e
	a, b := mustClaim(t, s), mustClaim(t, s)
	// "Crash": close without finishing a and b, then start again.
	reopen := func() {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = jobs.Open(path); err != nil {
			t.Fatal(err)
		}
	}
	reopen()
	defer func() { s.Close() }()

	const maxAttempts = 2
	requeued, failed, err := s.Recover(ctx, maxAttempts)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if diff := cmp.Diff([]string{a.ID, b.ID}, requeued); diff != "" {
		t.Errorf("Recover requeued (-want +got):\n%s", diff)
	}
	if len(failed) != 0 {
		t.Errorf("Recover failed %v, want none", failed)
	}
	if diff := cmp.Diff(ids, queueIDs(t, s)); diff != "" {
		t.Errorf("queue after Recover (-want +got):\n%s", diff)
	}
	for _, id := range []string{a.ID, b.ID} {
		j := mustGet(t, s, id)
		if j.Attempts != 1 || !j.StartedAt.IsZero() || !strings.Contains(j.Error, "server stopped") {
			t.Errorf("recovered job: Attempts %d, StartedAt %v, Error %q; want 1, zero, a message", j.Attempts, j.StartedAt, j.Error)
		}
	}

	// Nothing running: Recover does nothing.
	if requeued, failed, err := s.Recover(ctx, maxAttempts); err != nil || requeued != nil || failed != nil {
		t.Errorf("second Recover = %v, %v, %v; want nothing", requeued, failed, err)
	}

	// a runs a second time (attempt 2 = max) and the server dies again:
	// a fails; b, still queued, is untouched.
	if got := mustClaim(t, s); got.ID != a.ID || got.Attempts != 2 {
		t.Fatalf("Claim = %s attempt %d, want %s attempt 2", got.ID, got.Attempts, a.ID)
	}
	reopen()
	before := time.Now()
	requeued, failed, err = s.Recover(ctx, maxAttempts)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(requeued) != 0 || !slices.Equal(failed, []string{a.ID}) {
		t.Errorf("Recover = %v, %v; want nothing requeued, %s failed", requeued, failed, a.ID)
	}
	j := mustGet(t, s, a.ID)
	wantMsg := "the server stopped while the job ran, twice (MAX_JOB_ATTEMPTS = 2); the job is not run again"
	if j.State != jobs.Failed || j.Error != wantMsg || j.ExitCode != nil || j.Attempts != 2 {
		t.Errorf("job after too many attempts: state %s, error %q, exit %v, attempts %d; want failed, %q, nil, 2",
			j.State, j.Error, j.ExitCode, j.Attempts, wantMsg)
	}
	checkTime(t, "FinishedAt", j.FinishedAt, before, time.Now())
	if diff := cmp.Diff(ids[1:], queueIDs(t, s)); diff != "" {
		t.Errorf("queue after second Recover (-want +got):\n%s", diff)
	}

	// The outcome survives another restart.
	reopen()
	if got := mustGet(t, s, a.ID); got.State != jobs.Failed {
		t.Errorf("after reopen: %s is %s, want failed", a.ID, got.State)
	}
	if diff := cmp.Diff(ids[1:], queueIDs(t, s)); diff != "" {
		t.Errorf("queue after reopen (-want +got):\n%s", diff)
	}

	if _, _, err := s.Recover(ctx, 0); err == nil {
		t.Error("Recover(0) succeeded, want an error")
	}
}

func TestRecoverMessages(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	createN(t, s, 1)
	for attempt := 1; attempt <= 3; attempt++ {
		j := mustClaim(t, s)
		requeued, failed, err := s.Recover(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, s, j.ID)
		if attempt < 3 {
			want := fmt.Sprintf("the server stopped while the job was running (attempt %d of 3); queued again", attempt)
			if len(requeued) != 1 || got.Error != want {
				t.Errorf("attempt %d: requeued %v, error %q; want 1 job, %q", attempt, requeued, got.Error, want)
			}
			continue
		}
		want := "the server stopped while the job ran, 3 times (MAX_JOB_ATTEMPTS = 3); the job is not run again"
		if len(failed) != 1 || got.Error != want {
			t.Errorf("attempt %d: failed %v, error %q; want 1 job, %q", attempt, failed, got.Error, want)
		}
	}
}

func TestList(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	t0 := time.Now()
	ids := createN(t, s, 6) // a..f
	a, b := mustClaim(t, s), mustClaim(t, s)
	if err := s.Finish(ctx, a.ID, jobs.Succeeded, intp(0), "", nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // distinct finish times on coarse clocks
	if _, err := s.Cancel(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	tCancel := mustGet(t, s, ids[2]).FinishedAt
	// Order: running (b), queued (d e f), finished newest first (c a).
	tests := []struct {
		name string
		opts jobs.ListOptions
		want []string
	}{
		{"unfinished only", jobs.ListOptions{}, []string{b.ID, ids[3], ids[4], ids[5]}},
		{"finished since start", jobs.ListOptions{IncludeFinishedSince: t0}, []string{b.ID, ids[3], ids[4], ids[5], ids[2], a.ID}},
		{"finished since cancel", jobs.ListOptions{IncludeFinishedSince: tCancel}, []string{b.ID, ids[3], ids[4], ids[5], ids[2]}},
		{"finished since after", jobs.ListOptions{IncludeFinishedSince: time.Now().Add(time.Hour)}, []string{b.ID, ids[3], ids[4], ids[5]}},
		{"far past", jobs.ListOptions{IncludeFinishedSince: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}, []string{b.ID, ids[3], ids[4], ids[5], ids[2], a.ID}},
		{"limit 1", jobs.ListOptions{IncludeFinishedSince: t0, Limit: 1}, []string{b.ID}},
		{"limit 3", jobs.ListOptions{IncludeFinishedSince: t0, Limit: 3}, []string{b.ID, ids[3], ids[4]}},
		{"limit 5", jobs.ListOptions{IncludeFinishedSince: t0, Limit: 5}, []string{b.ID, ids[3], ids[4], ids[5], ids[2]}},
	}
	for _, tt := range tests {
		list, err := s.List(ctx, tt.opts)
		if err != nil {
			t.Fatalf("%s: List: %v", tt.name, err)
		}
		var got []string
		for _, j := range list {
			got = append(got, j.ID)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: List(%+v) ids (-want +got):\n%s", tt.name, tt.opts, diff)
		}
	}
	// List returns whole jobs.
	list, err := s.List(ctx, jobs.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(mustGet(t, s, b.ID), list[0]); diff != "" {
		t.Errorf("List entry (-Get +List):\n%s", diff)
	}
}

func TestCounts(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	want := map[jobs.State]int{jobs.Queued: 0, jobs.Running: 0, jobs.Succeeded: 0, jobs.Failed: 0, jobs.Cancelled: 0}
	check := func() {
		t.Helper()
		got, err := s.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Counts (-want +got):\n%s", diff)
		}
		q, err := s.QueuedCount(ctx)
		if err != nil || q != want[jobs.Queued] {
			t.Errorf("QueuedCount = %d, %v; want %d", q, err, want[jobs.Queued])
		}
	}
	check()
	ids := createN(t, s, 6)
	want[jobs.Queued] = 6
	check()
	for _, st := range []jobs.State{jobs.Succeeded, jobs.Failed, jobs.Cancelled} {
		j := mustClaim(t, s)
		if err := s.Finish(ctx, j.ID, st, nil, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	mustClaim(t, s)
	if _, err := s.Cancel(ctx, ids[5]); err != nil {
		t.Fatal(err)
	}
	want = map[jobs.State]int{jobs.Queued: 1, jobs.Running: 1, jobs.Succeeded: 1, jobs.Failed: 1, jobs.Cancelled: 2}
	check()
}

func TestResultsToExpire(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	ids := createN(t, s, 5)
	j0, j1, _ := mustClaim(t, s), mustClaim(t, s), mustClaim(t, s) // ids[2] stays running
	if err := s.Finish(ctx, j0.ID, jobs.Succeeded, intp(0), "", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, j1.ID, jobs.Failed, intp(1), "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cancel(ctx, ids[3]); err != nil { // ids[4] stays queued
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, j0.ID); err != nil {
		t.Fatal(err)
	}
	expireIDs := func(before time.Time) []string {
		t.Helper()
		js, err := s.ResultsToExpire(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range js {
			ids = append(ids, j.ID)
		}
		return ids
	}
	later := time.Now().Add(time.Second)
	if diff := cmp.Diff([]string{j0.ID, j1.ID, ids[3]}, expireIDs(later)); diff != "" {
		t.Errorf("ResultsToExpire(now) (-want +got):\n%s", diff)
	}
	if err := s.MarkResultsRemoved(ctx, j1.ID); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{j0.ID, ids[3]}, expireIDs(later)); diff != "" {
		t.Errorf("ResultsToExpire after removal (-want +got):\n%s", diff)
	}
	if got := expireIDs(mustGet(t, s, j0.ID).FinishedAt); len(got) != 0 {
		t.Errorf("ResultsToExpire(first finish time) = %v, want none (strictly before)", got)
	}
	if got := expireIDs(time.Time{}); len(got) != 0 {
		t.Errorf("ResultsToExpire(zero time) = %v, want none", got)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "jobs.db")
	s := openStore(t, path)
	mustCreate(t, s, &jobs.Job{})
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {filepath.Dir(dir), 0o700 | os.ModeDir}, {path, 0o600}, {path + "-wal", 0o600}, {path + "-shm", 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(notDir, "jobs.db"), dir, garbage} {
		if s, err := jobs.Open(path); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, &jobs.Job{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = jobs.Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a schema version 99 database succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open error = %v, want it to say the schema is newer", err)
	}
}

func TestReopenKeepsJobs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	j := mustCreate(t, s, &jobs.Job{SubmissionID: "s", Options: map[string]string{"k": "v"}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	if diff := cmp.Diff(j, mustGet(t, s, j.ID)); diff != "" {
		t.Errorf("after reopen (-before +after):\n%s", diff)
	}
	// The sequence continues: a new job queues behind the old one.
	k := mustCreate(t, s, &jobs.Job{})
	if diff := cmp.Diff([]string{j.ID, k.ID}, queueIDs(t, s)); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := jobs.Open(filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(t.Context(), &jobs.Job{}); err == nil {
		t.Error("Create after Close succeeded")
	}
	if _, err := s.Get(t.Context(), jobs.NewID()); err == nil || errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get after Close = %v, want a non-ErrNotFound error", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.Create(ctx, &jobs.Job{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Create(cancelled ctx) error = %v, want context.Canceled", err)
	}
	if n, err := s.QueuedCount(t.Context()); err != nil || n != 0 {
		t.Errorf("QueuedCount = %d, %v; want 0", n, err)
	}
}

func TestManyQueued(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := jobs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// More than DefaultListLimit; 10,000 is BenchmarkOpenRecover10k's
	// (the race detector makes the C-to-Go SQLite very slow).
	const n = 2 * jobs.DefaultListLimit
	if err := jobs.InsertQueuedForTest(ctx, s, n); err != nil {
		t.Fatal(err)
	}
	first := mustClaim(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s = openStore(t, path)
	requeued, _, err := s.Recover(ctx, 3)
	if err != nil || len(requeued) != 1 || requeued[0] != first.ID {
		t.Fatalf("Recover = %v, %v; want [%s]", requeued, err, first.ID)
	}
	t.Logf("Open+Recover with %d queued jobs: %v", n, time.Since(start))

	list, err := s.List(ctx, jobs.ListOptions{})
	if err != nil || len(list) != jobs.DefaultListLimit || list[0].ID != first.ID {
		t.Errorf("List = %d jobs, %v; want %d starting with %s", len(list), err, jobs.DefaultListLimit, first.ID)
	}
	last := mustCreate(t, s, &jobs.Job{})
	if pos, err := s.QueuePosition(ctx, last.ID); err != nil || pos != n+1 {
		t.Errorf("QueuePosition(last) = %d, %v; want %d", pos, err, n+1)
	}
	if got := mustClaim(t, s); got.ID != first.ID || got.Attempts != 2 {
		t.Errorf("Claim = %s attempt %d, want %s attempt 2", got.ID, got.Attempts, first.ID)
	}
}

// TestConcurrentUse runs readers (more than the reader pool's connections,
// some in List's read transaction) and writers at once from a fresh store,
// whose statements are all prepared while they run: every call returns
// (none waits for a connection another holds) and the counts add up.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := openStore(t, filepath.Join(t.TempDir(), "jobs.db"))
	const writers, readers, rounds = 4, 12, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				j, _, err := s.Create(ctx, &jobs.Job{SubmissionID: fmt.Sprintf("w%d-%d", w, i)})
				if err == nil && i%2 == 0 {
					_, err = s.Claim(ctx)
				}
				if err == nil {
					_, err = s.Get(ctx, j.ID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if _, err := s.List(ctx, jobs.ListOptions{IncludeFinishedSince: time.Unix(1, 0)}); err != nil {
					errs <- err
					return
				}
				if _, err := s.Counts(ctx); err != nil {
					errs <- err
					return
				}
				if _, err := s.QueuedCount(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := counts[jobs.Queued] + counts[jobs.Running]; got != writers*rounds || counts[jobs.Running] != writers*((rounds+1)/2) {
		t.Errorf("counts %v, want %d jobs of which %d running", counts, writers*rounds, writers*((rounds+1)/2))
	}
}
