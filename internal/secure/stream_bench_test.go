package secure

import (
	"io"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// BenchmarkStream sends a file-sized stream the way recon's transfers do:
// 256 KiB writes on one side of a loopback TCP connection, 256 KiB
// io.ReadFull reads on the other. Besides MB/s it reports the CPU time the
// process spent per byte (cpu-ns/B, user and system, both ends), which a
// busy shared machine disturbs much less than the wall-clock rate.
func BenchmarkStream(b *testing.B) {
	const chunk = 256 << 10
	k := keys.MustGenerate()
	cfg := testConfig(k, RoleClient)
	c, srv := tcpPair(b, cfg, cfg)
	_ = c.SetDeadline(time.Time{})
	_ = srv.SetDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		for {
			if _, err := io.ReadFull(srv, buf); err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	msg := randomBytes(chunk, 1)
	b.SetBytes(chunk)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	cpu.report(b, int64(b.N)*chunk)
}

// cpuClock measures the CPU time of the whole process.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{processCPU()} }

// report adds the metric cpu-ns/B: process CPU time per byte transferred.
func (c cpuClock) report(b *testing.B, bytes int64) {
	if bytes > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(bytes), "cpu-ns/B")
	}
}
