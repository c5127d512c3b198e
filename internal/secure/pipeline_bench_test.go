package secure

import (
	"crypto/sha256"
	"hash"
	"io"
	"net"
	"os"
	"testing"

	"github.com/recon-mri/recon/internal/xfer"
)

// The per-end transfer benchmarks: one end of a transfer doing all its
// work (file, SHA-256, AES-256-GCM, loopback TCP) against a peer that does
// next to nothing (it drains or replays raw bytes), so that the figures are
// that end's. Run them with -cpu 1,2 to see what a second core gives one
// end (GOMAXPROCS 1 and 2):
//
//	RECON_BENCH_DIR=/dev/shm go test -run '^$' -bench 'BenchmarkEnd' -cpu 1,2 -benchmem ./internal/secure/
//
// cpu-ns/B is the CPU time of the whole process (both goroutines of the
// pair) per byte; the peer's share is the kernel's TCP copy alone.

const pipelineBytes = 64 << 20

// benchFile returns an open file of n random bytes in $RECON_BENCH_DIR
// (tmpfs, for instance) or a temporary directory.
func benchFile(b *testing.B, n int) *os.File {
	dir := os.Getenv("RECON_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	f, err := os.CreateTemp(dir, "pipeline-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	if _, err := f.Write(randomBytes(n, 7)); err != nil {
		b.Fatal(err)
	}
	return f
}

// rawPair returns the two ends of a new loopback TCP connection.
func rawPair(b *testing.B, ln net.Listener) (a, z net.Conn) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		b.Fatal(r.err)
	}
	return a, r.c
}

// BenchmarkEndSend is the sending end: a file read, optionally hashed,
// sealed and sent. Copy is xfer.Copy into Conn.Write (reading and hashing
// in goroutines of their own, as the client's upload does; without the
// hash, as the server sent results before SendFrom); SendFrom is
// Conn.SendFrom (one goroutine, one copy fewer, as the server sends
// results now).
func BenchmarkEndSend(b *testing.B) {
	for _, v := range []struct {
		name string
		hash bool
		send func(c *Conn, f *os.File, h hash.Hash) error
	}{
		{"Copy+SHA256", true, func(c *Conn, f *os.File, h hash.Hash) error {
			_, err := xfer.Copy(c, f, pipelineBytes, h)
			return err
		}},
		{"Copy", false, func(c *Conn, f *os.File, _ hash.Hash) error {
			_, err := xfer.Copy(c, f, pipelineBytes, nil)
			return err
		}},
		{"SendFrom", false, func(c *Conn, f *os.File, _ hash.Hash) error {
			_, err := c.SendFrom(f, pipelineBytes)
			return err
		}},
	} {
		b.Run(v.name, func(b *testing.B) {
			f := benchFile(b, pipelineBytes)
			ln := listen(b)
			defer ln.Close()
			b.SetBytes(pipelineBytes)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				a, z := rawPair(b, ln)
				drained := make(chan error, 1)
				go func() { _, err := io.Copy(io.Discard, z); drained <- err }()
				send, _ := testCipherStates()
				c := newConn(a, &Config{Role: RoleClient}, send, nil)
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if err := v.send(c, f, sha256.New()); err != nil {
					b.Fatal(err)
				}
				if err := c.CloseWrite(); err != nil {
					b.Fatal(err)
				}
				if err := <-drained; err != nil {
					b.Fatal(err)
				}
				a.Close()
				z.Close()
			}
			cpu.report(b, int64(b.N)*pipelineBytes)
		})
	}
}

// BenchmarkEndReceive is the receiving end: records opened, hashed and
// written to a file through xfer.Copy, as the server takes an upload and
// the client a download; the peer replays records sealed beforehand.
func BenchmarkEndReceive(b *testing.B) {
	send, _ := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	if _, err := w.Write(randomBytes(pipelineBytes, 8)); err != nil {
		b.Fatal(err)
	}
	sealed := wire.buf
	f := benchFile(b, 0)
	ln := listen(b)
	defer ln.Close()
	b.SetBytes(pipelineBytes)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		a, z := rawPair(b, ln)
		go func() { a.Write(sealed); a.Close() }()
		_, recv := testCipherStates()
		c := newConn(z, &Config{Role: RoleClient}, nil, recv)
		if err := f.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if _, err := xfer.Copy(xfer.NewSyncingWriter(f), c, pipelineBytes, sha256.New()); err != nil {
			b.Fatal(err)
		}
		z.Close()
	}
	cpu.report(b, int64(b.N)*pipelineBytes)
}
