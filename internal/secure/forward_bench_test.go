package secure

import (
	"io"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// BenchmarkForward relays a stream between two loopback TCP connections the
// way the relay does: a sender writes 256 KiB at a time into one
// connection, the relay moves the bytes into a second one (with another
// key), and a receiver reads them. "forward" is Forward; "copy" is the
// plain Read/Write loop through a 256 KiB buffer it replaces. Both report
// the process's CPU per byte (sender, relay and receiver together; only the
// relay's part differs between them):
//
//	go test -run '^$' -bench Forward -count 6 ./internal/secure/
func BenchmarkForward(b *testing.B) {
	b.Run("forward", func(b *testing.B) {
		benchRelay(b, func(dst, src *Conn, n int64) error {
			rerr, werr := Forward(dst, src, n, Forwarding{WriteTimeout: time.Minute})
			if rerr != nil {
				return rerr
			}
			return werr
		})
	})
	b.Run("copy", func(b *testing.B) {
		benchRelay(b, func(dst, src *Conn, n int64) error {
			buf := make([]byte, 256<<10)
			_, err := io.CopyBuffer(dst, io.LimitReader(src, n), buf)
			return err
		})
	})
}

func benchRelay(b *testing.B, relay func(dst, src *Conn, n int64) error) {
	const chunk = 256 << 10
	cfgA := testConfig(keys.MustGenerate(), RoleClient)
	cfgB := testConfig(keys.MustGenerate(), RoleClient)
	send, in := tcpPair(b, cfgA, cfgA)
	out, recv := tcpPair(b, cfgB, cfgB)
	total := int64(b.N) * chunk
	relayed := make(chan error, 1)
	go func() { relayed <- relay(out, in, total) }()
	received := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		var got int64
		for got < total {
			n, err := recv.Read(buf)
			got += int64(n)
			if err != nil {
				received <- err
				return
			}
		}
		received <- nil
	}()
	msg := randomBytes(chunk, 1)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if _, err := send.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-relayed; err != nil {
		b.Fatal(err)
	}
	if err := <-received; err != nil {
		b.Fatal(err)
	}
	cpu.report(b, total)
}
