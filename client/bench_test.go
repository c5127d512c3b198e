//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package client_test

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
	"modernc.org/sqlite"
)

// writeRandomFile writes n random bytes to a new file in dir.
func writeRandomFile(b *testing.B, dir string, n int64) string {
	b.Helper()
	p := filepath.Join(dir, "input.raw")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkUpload measures a submission of one 256 MiB file (stored,
// hashed and fsynced by the server) through the client package on one
// connection, against a real server on loopback. The no-op script leaves
// no results.
func BenchmarkUpload(b *testing.B) {
	const size = 256 << 20
	s := servertest.Start(b, servertest.Options{Script: "#!/bin/sh\nexit 0\n", Dir: benchDir(b)})
	c := s.Dial(b)
	p := writeRandomFile(b, b.TempDir(), size)
	ctx := context.Background()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Submit(ctx, []string{p}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownload measures fetching a 256 MiB result.
func BenchmarkDownload(b *testing.B) {
	const size = 256 << 20
	s := servertest.Start(b, servertest.Options{Dir: benchDir(b)}) // copy script: the result is the input
	c := s.Dial(b)
	p := writeRandomFile(b, b.TempDir(), size)
	ctx := context.Background()
	var ids []string
	for range b.N {
		j, err := c.Submit(ctx, []string{p}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if j, err = c.Wait(ctx, j.JobID, nil); err != nil || j.State != "succeeded" {
			b.Fatalf("job %v: %v", j, err)
		}
		ids = append(ids, j.JobID)
	}
	out := b.TempDir()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := c.Fetch(ctx, ids[i], filepath.Join(out, ids[i]), nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(filepath.Join(out, ids[i]))
		b.StartTimer()
	}
}

// BenchmarkSmallJob measures a whole small job (1 KiB file, no-op script)
// on one connection: submit, wait, fetch (nothing to download, but the
// acknowledgement round trip). It reports p50 and p90, and the median of
// each step.
func BenchmarkSmallJob(b *testing.B) {
	s := servertest.Start(b, servertest.Options{Script: "#!/bin/sh\nexit 0\n", Dir: benchDir(b)})
	c := s.Dial(b)
	dir := b.TempDir()
	p := filepath.Join(dir, "small.raw")
	if err := os.WriteFile(p, make([]byte, 1024), 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var lat, sub, wait, fetch []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		j, err := c.Submit(ctx, []string{p}, nil)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if j, err = c.Wait(ctx, j.JobID, nil); err != nil || j.State != "succeeded" {
			b.Fatalf("job %v: %v", j, err)
		}
		t2 := time.Now()
		if _, _, err := c.Fetch(ctx, j.JobID, filepath.Join(dir, j.JobID), nil); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		sub, wait, fetch = append(sub, t1.Sub(start)), append(wait, t2.Sub(t1)), append(fetch, time.Since(t2))
	}
	report := func(ds []time.Duration, q float64, unit string) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		b.ReportMetric(float64(ds[int(float64(len(ds))*q)].Microseconds())/1000, unit)
	}
	report(lat, 0.5, "p50-ms")
	report(lat, 0.9, "p90-ms")
	report(sub, 0.5, "submit-p50-ms")
	report(wait, 0.5, "wait-p50-ms")
	report(fetch, 0.5, "fetch-p50-ms")
}

// likeMain makes the process commit SQLite transactions the way the recon
// binary does (see cmd/recon/main.go).
func likeMain() { sqlite.Fdatasync(true) }

// benchDir is where benchmark servers keep their data: $RECON_BENCH_DIR
// (e.g. /dev/shm, to measure without the disk) or a temporary directory.
func benchDir(b *testing.B) string {
	likeMain()
	if d := os.Getenv("RECON_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "recon-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}
