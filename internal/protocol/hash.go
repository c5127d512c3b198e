package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/zeebo/blake3"
)

// The end-to-end hashes a session may check file bytes with. A session
// uses SHA-256 unless its client's hello chose another (version 3).
// SHA-256 is always available: it is what a result's digest is given to
// users as, and the hash of every version-2 session. BLAKE3 (32-byte
// output) costs about half as much CPU per byte on recon's hardware, and
// checks the bytes of a session that chose it; see docs/PROTOCOL.md.
const (
	HashSHA256 = "sha256"
	HashBLAKE3 = "blake3"
)

// Limits of a hello.
const (
	MaxHelloHashes = 8
	MaxHashNameLen = 16
)

// Hello is the body of TypeHello: the end-to-end hashes the client can
// compute, in its order of preference.
type Hello struct {
	Hashes []string `json:"hashes"`
}

// HelloReply is the body of TypeHelloReply: the server's protocol version
// and the hash the session uses from now on.
type HelloReply struct {
	Protocol int    `json:"protocol"`
	Hash     string `json:"hash"`
}

// Check validates a hello: 1 to MaxHelloHashes names, each of 1 to
// MaxHashNameLen bytes of [a-z0-9-]. Names this side does not know are
// allowed (a later client may offer more); ChooseHash skips them.
func (h *Hello) Check() error {
	if len(h.Hashes) == 0 || len(h.Hashes) > MaxHelloHashes {
		return fmt.Errorf("a hello lists 1 to %d hashes, not %d", MaxHelloHashes, len(h.Hashes))
	}
	for _, n := range h.Hashes {
		if n == "" || len(n) > MaxHashNameLen {
			return fmt.Errorf("a hash name has 1 to %d characters", MaxHashNameLen)
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("hash name %q has a character other than a-z, 0-9 and '-'", n)
			}
		}
	}
	return nil
}

// CheckHello checks a hello against the rules of the session it comes in:
// at most one, before the session's first submit or fetch (said and
// transferred say what the session did), and well formed (Check). Its
// error is a bad_request.
func CheckHello(h *Hello, said, transferred bool) error {
	if said || transferred {
		return Errorf(CodeBadRequest, "hello must come before any transfer, once")
	}
	if err := h.Check(); err != nil {
		return Errorf(CodeBadRequest, "%v", err)
	}
	return nil
}

// ChooseHash returns the first of offered that this side supports, or
// HashSHA256 when none is.
func ChooseHash(offered []string) string {
	for _, n := range offered {
		if KnownHash(n) {
			return n
		}
	}
	return HashSHA256
}

// KnownHash reports whether name is a hash this side can compute.
func KnownHash(name string) bool {
	return name == HashSHA256 || name == HashBLAKE3
}

// SupportedHashes returns the hashes this side can compute, the one it
// prefers first (BLAKE3: about half SHA-256's CPU per byte): what a client
// offers in its hello.
func SupportedHashes() []string { return []string{HashBLAKE3, HashSHA256} }

// NewHash returns a new hash.Hash of the named end-to-end hash; it panics
// on a name KnownHash does not accept.
func NewHash(name string) hash.Hash {
	switch name {
	case HashSHA256:
		return sha256.New()
	case HashBLAKE3:
		return blake3.New()
	}
	panic("protocol: unknown hash " + name)
}

// HexSum returns h's digest in lower-case hex.
func HexSum(h hash.Hash) string {
	var b [64]byte
	return hex.EncodeToString(h.Sum(b[:0]))
}

// ValidDigest reports whether s is a digest in the form both hashes give:
// 64 lower-case hex digits.
func ValidDigest(s string) bool { return ValidSHA256(s) }

// Digest returns the digest a FileDone carries for the named hash, and
// whether it carries exactly that one: the field of the session's hash,
// and not the other.
func (d *FileDone) Digest(name string) (string, bool) {
	switch name {
	case HashSHA256:
		return d.SHA256, d.SHA256 != "" && d.BLAKE3 == ""
	case HashBLAKE3:
		return d.BLAKE3, d.BLAKE3 != "" && d.SHA256 == ""
	}
	return "", false
}

// NewFileDone returns the FileDone of a file whose digest under the named
// hash is sum.
func NewFileDone(name, sum string) FileDone {
	if name == HashBLAKE3 {
		return FileDone{BLAKE3: sum}
	}
	return FileDone{SHA256: sum}
}
