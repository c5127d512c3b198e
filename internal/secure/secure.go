// Package secure is recon's encrypted, mutually authenticated channel: a
// Noise NNpsk0 handshake bound to one role, followed by a stream of
// length-prefixed AEAD records.
//
// # Protocol
//
// The client opens with a 22-byte cleartext preamble: the magic "RCN\x00",
// the protocol version (2), the role byte and the 16-byte key id of its key
// ([KeyID]: the first 16 bytes of HKDF-SHA256 of the 32-byte key, no salt,
// info "recon/2 key id <role>"). The same 22 bytes are the Noise prologue,
// so a preamble altered in transit fails the handshake. The server checks
// magic, version and role first and closes the connection at once if the
// magic or role is wrong; a listener serves exactly one [Role].
//
// The key id lets a server that accepts many keys (a [Keyring]: one per
// client identity) find the one the client claims in a single map lookup,
// without trying each. It is derived from the key and reveals nothing of it
// (it links the sessions of one key, as their address does), and never a
// name. A key id the server does not know gets a random key nobody holds:
// the first Noise message then fails to decrypt exactly as it does for a
// wrong key, after the same work, so a peer cannot tell an unknown key id
// from a wrong key.
//
// A server that reads another version answers with five bytes, the magic
// and its own version ("RCN\x00\x02"), and closes; a client that reads
// them where the server's handshake message should be reports
// [ErrVersion] naming both versions (the first two bytes, "RC", are never
// the length of a handshake message). A version-1 client (the six-byte
// preamble without key id, PSK info "recon/1 psk <role>") whose key is the
// keyring's [NamedKey.V1] key (a server's SHARED_KEY) completes a version-1
// handshake, so that the server can tell it, inside the channel, to
// upgrade ([Conn.OldProtocol]); with any other key it gets no answer.
//
// The handshake is Noise_NNpsk0_25519_AESGCM_SHA256:
//
//	-> psk, e
//	<- e, ee
//
// each message framed as a 2-byte big-endian length and the message. The
// pre-shared key of a role is HKDF-SHA256 of the configured 32-byte key with
// "recon/2 psk <role>" as info, so the raw key never enters Noise and two
// roles never share a PSK even when an operator reuses a key. A wrong key or
// a wrong role makes the first message fail to decrypt at the server, before
// any Diffie-Hellman work; the server then closes without answering, and the
// client reports [ErrClosedUnanswered], which wraps [ErrAuth].
//
// Right after the handshake the client sends a hello record. [Server] returns
// only once that record has decrypted, so nothing above this package ever
// holds an unauthenticated peer: a replayed first message or a replayed
// recording of a whole session cannot produce it, because the server's
// ephemeral key is fresh.
//
// After the handshake each direction is a stream of records: a 2-byte
// big-endian length followed by that many bytes of AES-256-GCM ciphertext
// (at most [MaxRecordSize]). The plaintext is one type byte (data, close or
// hello) and the payload. Nonces are the implicit per-direction counters of
// Noise, so a replayed, reordered, dropped, reflected or altered record fails
// to decrypt; the first such failure is permanent and closes the connection.
// The end of a stream is an authenticated close record: a connection that
// ends without one is reported as [ErrTruncated], never as a clean io.EOF.
//
// # Security properties
//
// Both sides prove knowledge of the role's key; neither has a long-term
// identity beyond it. Forward secrecy comes from the ephemeral-ephemeral
// Diffie-Hellman: every connection uses fresh X25519 keys, so a key that
// leaks later does not decrypt recorded sessions (it does let its holder
// impersonate either side from then on).
//
// The cipher suite was chosen by measurement on recon's hardware (2-core AMD
// EPYC with AES-NI): AES-256-GCM, Noise's "AESGCM", sealed and opened about
// 1.5 to 1.9 times as fast as ChaCha20-Poly1305 in memory and over loopback
// TCP (figures in bench_test.go). It is fixed by the protocol version.
package secure

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// Limits and wire constants. Every limit on input from the network is here.
const (
	// ProtocolVersion is the version byte of the preamble; it is also part
	// of the HKDF info of every PSK.
	ProtocolVersion = 2

	// PreambleSize is the length of the cleartext preamble: 4 bytes of
	// magic, the version byte, the role byte and the key id.
	PreambleSize = preambleHeadSize + KeyIDSize

	// MaxRecordSize is the largest ciphertext of one record, the value of
	// its 2-byte length prefix. Longer lengths are rejected before anything
	// else is read.
	MaxRecordSize = recordOverhead + MaxPayload

	// MaxPayload is the largest number of data bytes one record carries.
	// Writes are split into records of at most this size.
	MaxPayload = 32 << 10

	// DefaultHandshakeTimeout bounds the whole handshake (preamble, both
	// Noise messages and the hello record) when Config.HandshakeTimeout is 0.
	DefaultHandshakeTimeout = 10 * time.Second

	// preambleHeadSize is the part of the preamble every version shares:
	// magic, version, role.
	preambleHeadSize = 6
	// versionRefusalSize is a server's answer to a preamble of another
	// protocol version: the magic and its own version byte. Its first two
	// bytes ("RC") can never be the length of a handshake message.
	versionRefusalSize = 5

	// recordOverhead is the type byte plus the AEAD tag.
	recordOverhead = 1 + tagSize
	// minRecordSize is the ciphertext of a record with an empty payload.
	minRecordSize = recordOverhead
	tagSize       = 16
	lengthSize    = 2
	// maxFrameSize is the largest record on the wire: length prefix and
	// ciphertext.
	maxFrameSize = lengthSize + MaxRecordSize

	// handshakeMessageSize is the exact size of either Noise handshake
	// message: an X25519 public key and the tag of the empty payload. It is
	// also the largest handshake message accepted.
	handshakeMessageSize = dhSize + tagSize
	dhSize               = 32

	// readBufferSize and writeBufferSize bound a Conn's memory: records are
	// read from the connection in chunks of up to readBufferSize bytes, and
	// written in batches of up to writeBufferSize bytes. Measured with
	// BenchmarkStream (256 KiB writes and reads over loopback TCP), 16 and
	// 8 frames took 11 % less CPU per byte than 4 and 2 (1.19 against 1.34
	// ns/B, medians of 6 alternating runs) and larger ones no less.
	readBufferSize  = 16 * maxFrameSize
	writeBufferSize = 8 * maxFrameSize
	// smallReadSize is the read buffer of a Conn's own, for waiting and
	// for records that fit: control messages need no pooled buffer.
	smallReadSize = 2 << 10
	// minReadSize is the smallest free tail of the read buffer worth
	// reading into; with less room left the buffer is compacted first.
	minReadSize = 16 << 10
)

// magic opens every preamble. It is not a printable protocol keyword, so a
// recon client pointed at an HTTP or TLS port fails at once.
const magic = "RCN\x00"

// Record types: the first plaintext byte of every record.
const (
	recordData  byte = 1 // payload is stream data
	recordClose byte = 2 // authenticated end of stream; empty payload
	recordHello byte = 3 // client's first record; empty payload
)

// Role names what a connection is for. A listener serves exactly one role,
// and each role derives its own PSK from its key.
type Role uint8

// The roles. The zero Role is invalid.
const (
	// RoleClient is the job channel: client to server, client to relay and
	// relay to server.
	RoleClient Role = 1 + iota
	// RoleAdmin is a server's admin channel.
	RoleAdmin
	// RoleRelayAdmin is a relay's admin channel.
	RoleRelayAdmin
)

// String returns "client", "admin" or "relay-admin".
func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleAdmin:
		return "admin"
	case RoleRelayAdmin:
		return "relay-admin"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

func (r Role) valid() bool { return r >= RoleClient && r <= RoleRelayAdmin }

// Config configures one side of a connection.
type Config struct {
	// Key is the role's pre-shared key. Required, except on a server side
	// with Keys.
	Key keys.Key
	// Keys, on a server side, are the keys it accepts, found by the key id
	// of the client's preamble; nil means Key alone.
	Keys *Keyring
	// Role is the role this connection is for. Required.
	Role Role
	// HandshakeTimeout bounds the handshake; 0 means
	// DefaultHandshakeTimeout. A deadline of the context passed to Client,
	// Server or Dial applies as well.
	HandshakeTimeout time.Duration
	// IdleTimeout, when positive, makes every Read that waits longer than
	// this for data from the peer fail with a timeout error. 0 means no
	// limit.
	IdleTimeout time.Duration

	// suite overrides the cipher suite, for the package's own tests and
	// benchmarks; nil means the protocol's suite.
	suite noiseSuite
	// random overrides the source of the ephemeral key, for the test
	// vectors of docs/PROTOCOL.md; nil means crypto/rand.
	random io.Reader
}

func (cfg *Config) check() error {
	switch {
	case cfg.Key.IsZero() && cfg.Keys == nil:
		return errors.New("secure: config has no key")
	case !cfg.Role.valid():
		return fmt.Errorf("secure: config has invalid role %d", uint8(cfg.Role))
	case cfg.HandshakeTimeout < 0:
		return errors.New("secure: negative handshake timeout")
	case cfg.IdleTimeout < 0:
		return errors.New("secure: negative idle timeout")
	}
	return nil
}

func (cfg *Config) handshakeTimeout() time.Duration {
	if cfg.HandshakeTimeout == 0 {
		return DefaultHandshakeTimeout
	}
	return cfg.HandshakeTimeout
}

var (
	// ErrAuth is matched by the error a client gets when the server does
	// not accept it, and wrapped by a server's error when a client fails to
	// authenticate.
	ErrAuth = errors.New("authentication failed")

	// ErrClosedUnanswered is the error a client gets when the server closes
	// the handshake without answering (it wraps ErrAuth). The server answers
	// none of its causes, so they look alike on purpose: the key or the role
	// (port) is wrong, the address is not allowed, or the server is busy
	// (over a cap on connections, or it evicted this one for a newer one
	// from the same address). Only the last may pass: retrying a few times
	// with a backoff is reasonable.
	ErrClosedUnanswered = fmt.Errorf("%w: the server closed the connection without answering: "+
		"the key is wrong, or the role (port), or this address is not allowed, or the server is busy", ErrAuth)

	// ErrVersion is the error a client gets from a server that speaks
	// another protocol version; its text names both versions.
	ErrVersion = errors.New("protocol version mismatch")

	// ErrPreamble is wrapped by a server's error for a connection whose
	// preamble has a wrong magic, version or role.
	ErrPreamble = errors.New("bad preamble")

	// ErrTruncated is returned by Read when the connection ends before the
	// peer's close record. It wraps io.ErrUnexpectedEOF.
	ErrTruncated = fmt.Errorf("secure: connection ended without a close record: %w", io.ErrUnexpectedEOF)

	// ErrCorrupt is returned by Read for a record that fails to decrypt:
	// it was altered, replayed, reordered, reflected, or a record before it
	// was dropped.
	ErrCorrupt = errors.New("secure: record failed authentication")

	// ErrRecord is returned by Read for a record that is malformed: a length
	// out of range, or an unknown or unexpected record type.
	ErrRecord = errors.New("secure: malformed record")

	// ErrWriteClosed is returned by Write after CloseWrite.
	ErrWriteClosed = errors.New("secure: write after CloseWrite")
)
