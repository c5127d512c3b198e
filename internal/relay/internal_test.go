package relay

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

func testPool(addrs ...string) *pool {
	p := newPool(addrs, secure.Config{}, time.Second, slog.New(slog.DiscardHandler))
	for _, b := range p.backends {
		b.healthy = true
	}
	return p
}

func addrsOf(bs []*backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.addr)
	}
	return out
}

// TestCandidatesFreeWorkersFirst: a backend with a free worker comes
// before one whose only worker is busy, even with more jobs running; among
// backends without a free worker the shortest queue comes first.
func TestCandidatesFreeWorkersFirst(t *testing.T) {
	p := testPool("a:1", "b:1", "c:1")
	st := func(workers, queued, running int) *protocol.StatusReply {
		return &protocol.StatusReply{MaxWorkers: workers, Jobs: map[protocol.JobState]int{"queued": queued, "running": running}}
	}
	p.markUp(p.byAddr["a:1"], st(1, 0, 1), time.Now()) // its one worker busy
	p.markUp(p.byAddr["b:1"], st(4, 0, 3), time.Now()) // one free of four
	p.markUp(p.byAddr["c:1"], st(2, 2, 2), time.Now()) // busy, two waiting
	for range 3 {
		if diff := cmp.Diff([]string{"b:1", "a:1", "c:1"}, addrsOf(p.candidates())); diff != "" {
			t.Fatalf("candidates (-want +got):\n%s", diff)
		}
	}
	// An upload toward b takes its free worker: then the shorter queue.
	p.reserve(p.byAddr["b:1"])
	if diff := cmp.Diff([]string{"a:1", "b:1", "c:1"}, addrsOf(p.candidates())); diff != "" {
		t.Errorf("candidates with an upload toward b (-want +got):\n%s", diff)
	}
}

func TestCandidatesLeastLoadedThenInTurn(t *testing.T) {
	p := testPool("a:1", "b:1", "c:1")
	// Equal loads: each call starts one further along.
	var firsts []string
	for range 6 {
		firsts = append(firsts, p.candidates()[0].addr)
	}
	if diff := cmp.Diff([]string{"a:1", "b:1", "c:1", "a:1", "b:1", "c:1"}, firsts); diff != "" {
		t.Errorf("ties not broken in turn (-want +got):\n%s", diff)
	}
	// Load decides before turn; uploads in progress count.
	p.byAddr["a:1"].queued, p.byAddr["a:1"].running = 2, 1
	p.byAddr["b:1"].running = 1
	p.reserve(p.byAddr["c:1"])
	p.reserve(p.byAddr["c:1"])
	if diff := cmp.Diff([]string{"b:1", "c:1", "a:1"}, addrsOf(p.candidates())); diff != "" {
		t.Errorf("candidates by load (-want +got):\n%s", diff)
	}
	// Down backends are never candidates.
	p.markDown(p.byAddr["b:1"], errors.New("connection refused"))
	if diff := cmp.Diff([]string{"c:1", "a:1"}, addrsOf(p.candidates())); diff != "" {
		t.Errorf("candidates with b down (-want +got):\n%s", diff)
	}
	// A placed job counts until the next check says otherwise.
	p.release(p.byAddr["c:1"], true)
	p.release(p.byAddr["c:1"], true)
	if c := p.byAddr["c:1"]; c.pending() != 2 || c.placed != 2 || c.uploading != 0 {
		t.Errorf("after two placements: pending %d, placed %d, uploading %d", c.pending(), c.placed, c.uploading)
	}
	p.markUp(p.byAddr["c:1"], &protocol.StatusReply{Jobs: map[protocol.JobState]int{"queued": 0, "running": 1}}, time.Now())
	if c := p.byAddr["c:1"]; c.pending() != 0 || c.running != 1 {
		t.Errorf("after a check: pending %d, running %d; want 0 and 1", c.pending(), c.running)
	}
	// A check that passed but started before b was marked down does not
	// bring it up (b may have been killed just after answering); a later
	// one does.
	b := p.byAddr["b:1"]
	p.markUp(b, &protocol.StatusReply{}, b.lastErrAt.Add(-time.Millisecond))
	if p.isHealthy(b) {
		t.Errorf("a check started before b was marked down brought it up")
	}
	p.markUp(b, &protocol.StatusReply{}, b.lastErrAt.Add(time.Millisecond))
	if !p.isHealthy(b) {
		t.Errorf("a check started after b was marked down did not bring it up")
	}
}

func TestFitQueue(t *testing.T) {
	q := &protocol.QueueReply{Unavailable: []string{"x:1"}}
	// About 11 KB per job: 2000 of them are more than one message holds.
	files := make([]protocol.FileSum, 100)
	for i := range files {
		files[i] = protocol.FileSum{Name: fmt.Sprintf("P%05d.7", i), Size: 1, SHA256: strings.Repeat("0", 64)}
	}
	for range 2000 {
		q.Jobs = append(q.Jobs, protocol.JobInfo{JobID: strings.Repeat("a", 26), State: "succeeded", Files: files})
	}
	fitQueue(q)
	if len(q.Jobs) == 0 || len(q.Jobs) == 2000 {
		t.Fatalf("fitQueue kept %d of 2000 jobs", len(q.Jobs))
	}
	var buf bytes.Buffer
	if err := protocol.WriteMessage(&buf, protocol.TypeQueueReply, q); err != nil {
		t.Errorf("fitted queue does not fit in a message: %v", err)
	}
}

func TestCheckAnnounced(t *testing.T) {
	tests := []struct {
		files []protocol.FileInfo
		code  protocol.Code
	}{
		{nil, protocol.CodeBadRequest},
		{[]protocol.FileInfo{{Name: "a", Size: -1}}, protocol.CodeBadRequest},
		{[]protocol.FileInfo{{Name: "a", Size: 1 << 62}, {Name: "b", Size: 1 << 62}}, protocol.CodeTooLarge},
		{make([]protocol.FileInfo, protocol.MaxFilesAbsolute+1), protocol.CodeTooLarge},
		{[]protocol.FileInfo{{Name: "a", Size: 0}, {Name: "b", Size: 5}}, ""},
	}
	for i, tt := range tests {
		err := checkAnnounced(tt.files)
		if tt.code == "" && err != nil || tt.code != "" && !protocol.IsCode(err, tt.code) {
			t.Errorf("case %d: checkAnnounced = %v, want code %q", i, err, tt.code)
		}
	}
}

// TestSubmissionHandOver: a submission sent to a backend starts as not
// handed over; handOver marks it; sending it again to the same backend
// keeps the mark (that backend may hold the job), to another clears it.
func TestSubmissionHandOver(t *testing.T) {
	ctx := t.Context()
	s, err := openRoutes(filepath.Join(t.TempDir(), "routes.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(step, wantAddr string, wantHanded bool) {
		t.Helper()
		addr, handed, err := s.submission(ctx, "sid")
		if err != nil || addr != wantAddr || handed != wantHanded {
			t.Errorf("%s: submission = %q, %v, %v; want %q, %v", step, addr, handed, err, wantAddr, wantHanded)
		}
	}
	if _, _, err := s.submission(ctx, "sid"); !errors.Is(err, errNoRoute) {
		t.Errorf("unknown submission: %v, want errNoRoute", err)
	}
	for _, step := range []struct {
		name string
		do   func() error
		addr string
		hand bool
	}{
		{"sent to a", func() error { return s.putSubmission(ctx, "sid", "a:1") }, "a:1", false},
		{"handed over to b (not its backend)", func() error { return s.handOver(ctx, "sid", "b:1") }, "a:1", false},
		{"sent to b", func() error { return s.putSubmission(ctx, "sid", "b:1") }, "b:1", false},
		{"handed over to b", func() error { return s.handOver(ctx, "sid", "b:1") }, "b:1", true},
		{"sent to b again", func() error { return s.putSubmission(ctx, "sid", "b:1") }, "b:1", true},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		check(step.name, step.addr, step.hand)
	}
}
