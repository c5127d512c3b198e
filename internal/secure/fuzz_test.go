package secure

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/recon-mri/recon/internal/keys"
)

// fuzzPayload is the payload the fuzz seeds seal at record position i. Only
// records sealed by the seeds decrypt, and each decrypts only at its own
// position, so whatever a reader returns must be a prefix of
// fuzzPayload(0) || fuzzPayload(1) || ...
func fuzzPayload(i int) []byte {
	return bytes.Repeat([]byte{byte('a' + i%26)}, (i*37)%200)
}

func fuzzStream(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, fuzzPayload(i)...)
	}
	return b
}

// fuzzFrames seals the seeds' record stream with the test key: six data
// records carrying fuzzPayload(0) to fuzzPayload(5), each framed alone,
// and all of them followed by the close record (position 6).
func fuzzFrames(f *testing.F) (frames [][]byte, all []byte) {
	send, _ := testCipherStates()
	for i := range 6 {
		b, err := appendRecord(nil, send, recordData, fuzzPayload(i))
		if err != nil {
			f.Fatal(err)
		}
		frames = append(frames, b)
	}
	closeRec, err := appendRecord(nil, send, recordClose, nil)
	if err != nil {
		f.Fatal(err)
	}
	return frames, append(bytes.Join(frames, nil), closeRec...)
}

// FuzzRecordReader feeds arbitrary bytes as the record stream of a reader
// with a known key. It must not panic, and must never return data that was
// not sealed with the key at that position.
func FuzzRecordReader(f *testing.F) {
	frames, all := fuzzFrames(f)
	f.Add(all)
	f.Add(bytes.Join(frames[:3], nil))
	f.Add(append(bytes.Clone(frames[0]), frames[2]...))
	f.Add(append(bytes.Clone(frames[0]), frames[0]...))
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Add(binary.BigEndian.AppendUint16(nil, minRecordSize))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, wire []byte) {
		for _, chunk := range []int{0, 1, 7} {
			_, recv := testCipherStates()
			sc := &scriptConn{in: wire, chunk: chunk}
			r := newConn(sc, &Config{Role: RoleClient}, nil, recv)
			got, err := readAll(r)
			want := fuzzStream(7)
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("reader returned data that was not sealed: %q", got)
			}
			if err == nil {
				t.Fatal("readAll ended without an error")
			}
			if err == io.EOF {
				// A clean end needs the close record, which only follows the
				// six data records.
				if !bytes.Equal(got, fuzzStream(6)) {
					t.Fatalf("clean end after %d bytes, want %d", len(got), len(fuzzStream(6)))
				}
			} else if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrRecord) {
				t.Fatalf("unexpected error %v", err)
			}
		}
	})
}

// fuzzKey is a fixed key, so that corpus entries stay meaningful.
var fuzzKey = func() keys.Key {
	k, err := keys.Parse("cmVjb24gZnV6eiBrZXksIG5vdCBhIHNlY3JldCEhISE=")
	if err != nil {
		panic(err)
	}
	return k
}()

// FuzzServerHandshake feeds arbitrary bytes as everything a client sends to
// Server. It must not panic and must never authenticate: the server's
// ephemeral key is fresh, so not even a recorded good session gets in.
func FuzzServerHandshake(f *testing.F) {
	// Seeds: a recorded good session and pieces of it.
	session := recordFuzzSession(f)
	f.Add(session)
	f.Add(session[:PreambleSize])
	f.Add(session[:PreambleSize+lengthSize+handshakeMessageSize])
	f.Add([]byte("RCN\x00\x01\x01"))
	f.Add([]byte("RCN\x00\x01\x01\x00\x30"))
	f.Add([]byte("RCN\x00\x03\x01"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, in []byte) {
		sc := &scriptConn{in: in}
		c, err := Server(context.Background(), sc, Config{Key: fuzzKey, Role: RoleClient})
		if err == nil {
			_ = c.Close()
			t.Fatal("Server authenticated fuzz input")
		}
		// Nothing is answered until the first message decrypted, except a
		// preamble of another version, which gets exactly the version
		// refusal (magic and the server's version). Version 1's first
		// message follows a 6-byte preamble.
		if sc.written == 0 {
			return
		}
		version := -1
		if len(in) > len(magic) && string(in[:len(magic)]) == magic {
			version = int(in[len(magic)])
		}
		switch version {
		case ProtocolVersion:
			if len(in) < PreambleSize+lengthSize+handshakeMessageSize {
				t.Fatalf("server wrote %d bytes before a whole first message", sc.written)
			}
		case 1:
			if len(in) < preambleHeadSize+lengthSize+handshakeMessageSize {
				t.Fatalf("server wrote %d bytes before a whole version-1 first message", sc.written)
			}
		default:
			if sc.written != versionRefusalSize {
				t.Fatalf("server wrote %d bytes to a preamble of version %d, want only the %d-byte version refusal", sc.written, version, versionRefusalSize)
			}
		}
	})
}

// recordFuzzSession records the client side of a good session with fuzzKey.
func recordFuzzSession(f *testing.F) []byte {
	a, b := memPipe()
	var rec bytes.Buffer
	a.record = &rec
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		s, err := Server(ctx, b, testConfig(fuzzKey, RoleClient))
		if err != nil {
			done <- err
			return
		}
		_, err = readAll(s)
		_ = s.Close()
		done <- err
	}()
	c, err := Client(ctx, a, testConfig(fuzzKey, RoleClient))
	if err != nil {
		f.Fatal(err)
	}
	_, _ = c.Write([]byte("data after the handshake"))
	_ = c.CloseWrite()
	if err := <-done; err != io.EOF {
		f.Fatalf("recording session: %v", err)
	}
	_ = c.Close()
	return rec.Bytes()
}
