package secure

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// BenchmarkBaseline measures the two references of the channel's target
// with the same shape as BenchmarkConn (64 KiB writes over loopback TCP, a
// reader draining the other end), so that one run gives all three side by
// side:
//
//   - BareAESGCM: 32 KiB records of AES-256-GCM, each behind a 2-byte
//     length, with a counter nonce and nothing else: no handshake, record
//     types, end-of-stream record or buffering policy. The floor a framed
//     AEAD stream over TCP costs on this machine.
//   - TLS13: crypto/tls 1.3 with its default suite choice (AES-128-GCM on
//     AES-NI hardware) and an ECDSA P-256 certificate made here.
//
// Run them interleaved with the channel:
//
//	go test -run '^$' -bench 'Conn/AESGCM|Baseline' -count 6 ./internal/secure/
func BenchmarkBaseline(b *testing.B) {
	b.Run("BareAESGCM", func(b *testing.B) {
		c, s := loopbackPair(b)
		key := randomBytes(32, 7)
		send, err := newAES256GCM(key)
		if err != nil {
			b.Fatal(err)
		}
		recv, err := newAES256GCM(key)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			// The reader: length, ciphertext, open, counting on.
			r := bufio.NewReaderSize(s, 256<<10)
			var hdr [2]byte
			var nonce [12]byte
			buf := make([]byte, 65535)
			for n := uint64(0); ; n++ {
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					done <- err
					return
				}
				ct := buf[:binary.BigEndian.Uint16(hdr[:])]
				if _, err := io.ReadFull(r, ct); err != nil {
					done <- err
					return
				}
				binary.BigEndian.PutUint64(nonce[4:], n)
				if _, err := recv.Open(ct[:0], nonce[:], ct, nil); err != nil {
					done <- err
					return
				}
			}
		}()
		const record = 32 << 10
		msg := randomBytes(benchWrite, 1)
		out := make([]byte, 0, benchWrite+benchWrite/record*(2+tagSize))
		var nonce [12]byte
		n := uint64(0)
		b.SetBytes(benchWrite)
		b.ReportAllocs()
		for b.Loop() {
			out = out[:0]
			for p := msg; len(p) > 0; p = p[min(record, len(p)):] {
				chunk := p[:min(record, len(p))]
				out = binary.BigEndian.AppendUint16(out, uint16(len(chunk)+tagSize))
				binary.BigEndian.PutUint64(nonce[4:], n)
				n++
				out = send.Seal(out, nonce[:], chunk, nil)
			}
			if _, err := c.Write(out); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("TLS13", func(b *testing.B) {
		c, s := loopbackPair(b)
		cert := selfSigned(b)
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		pool := x509.NewCertPool()
		pool.AddCert(cert.Leaf)
		cli := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "recon.test", MinVersion: tls.VersionTLS13})
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, benchWrite)
			for {
				if _, err := srv.Read(buf); err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					done <- err
					return
				}
			}
		}()
		if err := cli.Handshake(); err != nil {
			b.Fatal(err)
		}
		msg := randomBytes(benchWrite, 1)
		b.SetBytes(benchWrite)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cli.Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := cli.CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

// loopbackPair returns both ends of a TCP connection on 127.0.0.1, closed
// when the benchmark ends.
func loopbackPair(b *testing.B) (client, server net.Conn) {
	ln := listen(b)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		b.Fatal("accept failed")
	}
	b.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// selfSigned makes an ECDSA P-256 certificate for recon.test.
func selfSigned(b *testing.B) tls.Certificate {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "recon.test"},
		DNSNames:     []string{"recon.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
}
