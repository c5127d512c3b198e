package jobs_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"modernc.org/sqlite"

	"github.com/recon-mri/recon/internal/jobs"
)

// benchJob is a typical submission: a few raw files and options.
func benchJob() *jobs.Job {
	return &jobs.Job{
		Files: []jobs.File{
			{Name: "meas_MID00042_FID12345.dat", Size: 4 << 30, SHA256: strings.Repeat("ab", 32)},
			{Name: "noise.dat", Size: 1 << 20, SHA256: strings.Repeat("cd", 32)},
		},
		Options:    map[string]string{"RESOLUTION": "1mm", "ITERATIONS": "20"},
		ClientAddr: "192.0.2.10:51234",
	}
}

// BenchmarkCreate measures one Create: one committed, fsynced transaction
// (WAL, synchronous=FULL).
func BenchmarkCreate(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Create(ctx, benchJob()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateFdatasync is BenchmarkCreate with SQLite syncing by
// fdatasync(2) instead of fsync(2). The switch is process-wide, so the
// store does not flip it; this measures what the server would gain by
// calling sqlite.Fdatasync(true) at start-up.
func BenchmarkCreateFdatasync(b *testing.B) {
	prev, err := sqlite.Fdatasync(true)
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { sqlite.Fdatasync(prev) })
	BenchmarkCreate(b)
}

// BenchmarkCreateParallel measures Create from several goroutines; the
// single writer connection serialises their commits.
func BenchmarkCreateParallel(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.Create(ctx, benchJob()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkClaimFinish measures a worker's two commits per job: Claim and
// Finish with a small result manifest.
func BenchmarkClaimFinish(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	results := []jobs.File{{Name: "recon/image.nii", Size: 1 << 26, SHA256: strings.Repeat("ef", 32)}}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if _, _, err := s.Create(ctx, benchJob()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		j, err := s.Claim(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Finish(ctx, j.ID, jobs.Succeeded, intp(0), "", results); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures reading one job among 10,000.
func BenchmarkGet(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	if err := jobs.InsertQueuedForTest(ctx, s, 10000); err != nil {
		b.Fatal(err)
	}
	id := mustCreate(b, s, benchJob()).ID
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueuePosition measures the position of the last of 10,000
// queued jobs.
func BenchmarkQueuePosition(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	if err := jobs.InsertQueuedForTest(ctx, s, 10000); err != nil {
		b.Fatal(err)
	}
	id := mustCreate(b, s, benchJob()).ID
	b.ReportAllocs()
	for b.Loop() {
		if pos, err := s.QueuePosition(ctx, id); err != nil || pos != 10001 {
			b.Fatal(pos, err)
		}
	}
}

// BenchmarkOpenRecover10k measures a server start on a store with 10,000
// queued jobs of which 4 were running when the server died: Open, Recover
// (which requeues the 4), Close.
func BenchmarkOpenRecover10k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "jobs.db")
	ctx := context.Background()
	s, err := jobs.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := jobs.InsertQueuedForTest(ctx, s, 10000); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	const running = 4
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s, err := jobs.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		for range running {
			if _, err := s.Claim(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		s, err = jobs.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		requeued, _, err := s.Recover(ctx, 1<<30)
		if err != nil || len(requeued) != running {
			b.Fatal(len(requeued), err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	s, err = jobs.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if n, err := s.QueuedCount(ctx); err != nil || n != 10000 {
		b.Fatal(n, err)
	}
	_, err = s.Claim(ctx)
	if errors.Is(err, jobs.ErrNoJob) {
		b.Fatal("empty queue")
	}
}
