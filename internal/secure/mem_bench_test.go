package secure

import (
	"crypto/cipher"
	"crypto/sha256"
	"hash"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/zeebo/blake3"

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
// (with cipherStates(suite)), then a close record.
func sealedRecording(b *testing.B, suite noiseSuite, n int) []byte {
	send, _ := cipherStates(suite)
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
// read, hashed (SHA-256, or not at all), sealed and handed to a transport
// that discards it, through xfer.Copy into Conn.Write (reading, hashing
// and sealing in goroutines of their own).
func BenchmarkMemEndSend(b *testing.B) {
	for _, v := range memHashes {
		b.Run("Copy"+v.name, func(b *testing.B) {
			memSend(b, suiteAESGCM, v.hash(), func(c *Conn, f *os.File, h hash.Hash) error {
				_, err := xfer.Copy(c, f, pipelineBytes, h)
				return err
			})
		})
	}
}

// memHashes are the end-to-end hashes the per-end benchmarks run with.
var memHashes = []struct {
	name string
	hash func() hash.Hash
}{
	{"+SHA256", sha256.New},
	{"+BLAKE3", func() hash.Hash { return blake3.New() }},
	{"", func() hash.Hash { return nil }},
}

func memSend(b *testing.B, suite noiseSuite, h hash.Hash, send func(c *Conn, f *os.File, h hash.Hash) error) {
	f := benchFile(b, pipelineBytes)
	b.SetBytes(pipelineBytes)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		cs, _ := cipherStates(suite)
		c := newConn(&discardConn{}, &Config{Role: RoleClient}, cs, nil)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if h != nil {
			h.Reset()
		}
		if err := send(c, f, h); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b, int64(b.N)*pipelineBytes)
}

// BenchmarkMemEndReceive is the receiving end (the server's upload, the
// client's download): records replayed from memory, opened, hashed
// (SHA-256, or not at all) and written to a file, through xfer.Copy from
// Conn.Read.
func BenchmarkMemEndReceive(b *testing.B) {
	for _, v := range memHashes {
		b.Run("Copy"+v.name, func(b *testing.B) {
			memReceive(b, suiteAESGCM, v.hash(), func(f io.Writer, c *Conn, h hash.Hash) error {
				_, err := xfer.Copy(f, c, pipelineBytes, h)
				return err
			})
		})
	}
}

func memReceive(b *testing.B, suite noiseSuite, h hash.Hash, recv func(f io.Writer, c *Conn, h hash.Hash) error) {
	rec := sealedRecording(b, suite, pipelineBytes)
	f := benchFile(b, 0)
	b.SetBytes(pipelineBytes)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for b.Loop() {
		_, cs := cipherStates(suite)
		c := newConn(&replayConn{rec: rec}, &Config{Role: RoleClient}, nil, cs)
		if err := f.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if h != nil {
			h.Reset()
		}
		if err := recv(xfer.NewSyncingWriter(f), c, h); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b, int64(b.N)*pipelineBytes)
}

// suiteAES128GCM is the protocol's suite with AES-128-GCM (the first 16
// bytes of each key), for BenchmarkMemEndCipher only: the channel's
// cipher is fixed by its version.
var suiteAES128GCM = noise.NewCipherSuite(noise.DH25519, cipherFunc{name: "AESGCM", newAEAD: func(key []byte) (cipher.AEAD, error) {
	return newAES256GCM(key[:16]) // aes.NewCipher picks AES-128 for 16 bytes
}}, noise.HashSHA256)

// BenchmarkMemEndCipher compares AES-256-GCM (the channel's) with
// AES-128-GCM at each end, without the hash, so that the cipher's share
// stands out: the sending end (file, seal) and the receiving end (open,
// file), through xfer.Copy as the client and server run them.
//
//	RECON_BENCH_DIR=/dev/shm go test -run '^$' -bench 'BenchmarkMemEndCipher' -cpu 1 ./internal/secure/
func BenchmarkMemEndCipher(b *testing.B) {
	for _, s := range []struct {
		name  string
		suite noiseSuite
	}{{"AES256", suiteAESGCM}, {"AES128", suiteAES128GCM}} {
		b.Run("Send/"+s.name, func(b *testing.B) {
			memSend(b, s.suite, nil, func(c *Conn, f *os.File, h hash.Hash) error {
				_, err := xfer.Copy(c, f, pipelineBytes, h)
				return err
			})
		})
		b.Run("Receive/"+s.name, func(b *testing.B) {
			memReceive(b, s.suite, nil, func(f io.Writer, c *Conn, h hash.Hash) error {
				_, err := xfer.Copy(f, c, pipelineBytes, h)
				return err
			})
		})
	}
}
