package relay_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// BenchmarkUpload submits one file straight to a server and through a relay
// in front of the same server, in the same run, so the two can be compared
// (target: the relay at 70 % of direct or better). The file is
// RECON_BENCH_MIB MiB (default 256). Run it without -race:
//
//	go test -run '^$' -bench Upload -benchtime 5x ./internal/relay/
func BenchmarkUpload(b *testing.B) {
	mib := 256
	if s := os.Getenv("RECON_BENCH_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("RECON_BENCH_MIB=%q", s)
		}
		mib = n
	}
	size := int64(mib) << 20
	key := keys.MustGenerate().Encode()
	srv := servertest.Start(b, servertest.Options{
		Script: "#!/bin/sh\nexit 0\n",
		Extra:  map[string]string{"SHARED_KEY": key, "MIN_FREE_DISK_MB": "64"},
	})
	dir := b.TempDir()
	in := filepath.Join(dir, "bench.7")
	f, err := os.Create(in)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 131)
	}
	for range mib {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()

	rdir := b.TempDir()
	opts := writeRelayConfig(b, rdir, []string{srv.Addr().String()}, key, nil)
	r := startRelay(b, opts)

	run := func(b *testing.B, cfg client.Config) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(size)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := c.Submit(ctx, []string{in}, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, srv.ClientConfig()) })
	b.Run("relay", func(b *testing.B) {
		run(b, client.Config{Address: r.Addr().String(), Key: r.Key, DialTimeout: 10 * time.Second})
	})
}
