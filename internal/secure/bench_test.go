package secure

import (
	"crypto/cipher"
	"io"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"golang.org/x/crypto/chacha20poly1305"
)

var benchSuites = []struct {
	name  string
	suite noiseSuite
}{
	{"AESGCM", suiteAESGCM},
	{"ChaChaPoly", suiteChaChaPoly},
}

const benchWrite = 64 << 10

// BenchmarkConn streams 64 KiB writes from client to server over loopback
// TCP, with a reader draining the server side.
func BenchmarkConn(b *testing.B) {
	for _, s := range benchSuites {
		b.Run(s.name, func(b *testing.B) {
			k := keys.MustGenerate()
			cfg := testConfig(k, RoleClient)
			cfg.suite = s.suite
			c, srv := tcpPair(b, cfg, cfg)
			_ = c.SetDeadline(time.Time{})
			_ = srv.SetDeadline(time.Time{})
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, benchWrite)
				for {
					_, err := srv.Read(buf)
					if err != nil {
						if err == io.EOF {
							err = nil
						}
						done <- err
						return
					}
				}
			}()
			msg := randomBytes(benchWrite, 1)
			b.SetBytes(benchWrite)
			b.ReportAllocs()
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
		})
	}
}

// BenchmarkRecords seals and opens 64 KiB per op in memory, on one core:
// the channel's cost without the network.
func BenchmarkRecords(b *testing.B) {
	for _, s := range benchSuites {
		b.Run(s.name, func(b *testing.B) {
			send, recv := cipherStates(s.suite)
			wire := &loopConn{}
			w := newConn(wire, &Config{Role: RoleClient}, send, nil)
			r := newConn(wire, &Config{Role: RoleClient}, nil, recv)
			msg := randomBytes(benchWrite, 1)
			buf := make([]byte, benchWrite)
			b.SetBytes(benchWrite)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAEAD measures the bare AEADs sealing one 32 KiB record, for
// reference.
func BenchmarkAEAD(b *testing.B) {
	key := make([]byte, 32)
	aes, _ := newAES256GCM(key)
	chacha, _ := chacha20poly1305.New(key)
	for _, a := range []struct {
		name string
		aead cipher.AEAD
	}{{"AES256GCM", aes}, {"ChaCha20Poly1305", chacha}} {
		b.Run(a.name, func(b *testing.B) {
			buf := make([]byte, MaxPayload+1, MaxPayload+1+tagSize)
			nonce := make([]byte, 12)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				a.aead.Seal(buf[:0], nonce, buf, nil)
			}
		})
	}
}
