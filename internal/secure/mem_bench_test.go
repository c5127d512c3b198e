package secure

import (
	"crypto/sha256"
	"hash"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/xfer"
)

// The in-memory per-end benchmarks: one end of a transfer doing all its
// work (file, SHA-256, AES-256-GCM) over a transport that costs next to
// nothing (a connection whose Write discards, or whose Read replays
// records sealed beforehand), so that no peer goroutine and no kernel TCP
// copy take a core: with -cpu 1,2 the figures show what a second core
// gives the end itself.
//
//	RECON_BENCH_DIR=/dev/shm go test -run '^$' -bench 'BenchmarkMemEnd' -cpu 1,2 -benchmem ./internal/secure/
//
// cpu-ns/B is the CPU time of the whole process per byte; ns/op against
// cpu-ns/B×bytes shows how much of the work ran on the second core.

// discardConn is a transport whose Write discards: the cost of sending
// is the end's own.
type discardConn struct{ loopConn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// replayConn is a transport whose Read replays a recording of records
// sealed beforehand, as fast as memory moves it.
type replayConn struct {
	rec []byte
	pos int
}

func (r *replayConn) Read(p []byte) (int, error) {
	if r.pos == len(r.rec) {
		return 0, io.EOF
	}
	n := copy(p, r.rec[r.pos:])
	r.pos += n
	return n, nil
}

func (r *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (r *replayConn) Close() error                     { return nil }
func (r *replayConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (r *replayConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (r *replayConn) SetDeadline(time.Time) error      { return nil }
func (r *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (r *replayConn) SetWriteDeadline(time.Time) error { return nil }

// sealedRecording returns n random bytes sealed as Write seals them
// (with testCipherStates), then a close record.
func sealedRecording(b *testing.B, n int) []byte {
	send, _ := testCipherStates()
	wire := &loopConn{}
	w := newConn(wire, &Config{Role: RoleClient}, send, nil)
	if _, err := w.Write(randomBytes(n, 8)); err != nil {
		b.Fatal(err)
	}
	if err := w.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	return wire.buf
}

// BenchmarkMemEndSend is the sending end (the client's upload): a file
// read, hashed with SHA-256, sealed and handed to a transport that
// discards it. Copy is xfer.Copy into Conn.Write (reading, hashing and
// sealing in goroutines of their own); SendFrom is Conn.SendFrom hashing
// each record before sealing it (one goroutine, one copy fewer).
func BenchmarkMemEndSend(b *testing.B) {
	for _, v := range []struct {
		name string
		send func(c *Conn, f *os.File, h hash.Hash) error
	}{
		{"Copy+SHA256", func(c *Conn, f *os.File, h hash.Hash) error {
			_, err := xfer.Copy(c, f, pipelineBytes, h)
			return err
		}},
		{"SendFrom+SHA256", func(c *Conn, f *os.File, h hash.Hash) error {
			_, err := c.SendFrom(f, pipelineBytes, h)
			return err
		}},
	} {
		b.Run(v.name, func(b *testing.B) {
			f := benchFile(b, pipelineBytes)
			b.SetBytes(pipelineBytes)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				send, _ := testCipherStates()
				c := newConn(&discardConn{}, &Config{Role: RoleClient}, send, nil)
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if err := v.send(c, f, sha256.New()); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b, int64(b.N)*pipelineBytes)
		})
	}
}

// BenchmarkMemEndReceive is the receiving end (the server's upload, the
// client's download): records replayed from memory, opened, hashed with
// SHA-256 and written to a file. Copy is xfer.Copy from Conn.Read.
func BenchmarkMemEndReceive(b *testing.B) {
	rec := sealedRecording(b, pipelineBytes)
	for _, v := range []struct {
		name string
		recv func(f io.Writer, c *Conn, h hash.Hash) error
	}{
		{"Copy+SHA256", func(f io.Writer, c *Conn, h hash.Hash) error {
			_, err := xfer.Copy(f, c, pipelineBytes, h)
			return err
		}},
	} {
		b.Run(v.name, func(b *testing.B) {
			f := benchFile(b, 0)
			b.SetBytes(pipelineBytes)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				_, recv := testCipherStates()
				c := newConn(&replayConn{rec: rec}, &Config{Role: RoleClient}, nil, recv)
				if err := f.Truncate(0); err != nil {
					b.Fatal(err)
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if err := v.recv(xfer.NewSyncingWriter(f), c, sha256.New()); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b, int64(b.N)*pipelineBytes)
		})
	}
}
