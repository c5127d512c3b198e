package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"

	"github.com/flynn/noise"
)

// noiseSuite is the set of primitives of a Noise protocol.
type noiseSuite = noise.CipherSuite

// suiteAESGCM is the protocol's suite: Noise_*_25519_AESGCM_SHA256. It is
// an immutable value.
var suiteAESGCM = noise.NewCipherSuite(noise.DH25519, cipherFunc{name: "AESGCM", newAEAD: newAES256GCM}, noise.HashSHA256)

// cipherFunc is the AESGCM or ChaChaPoly cipher function of the Noise
// specification (section 12), as in flynn/noise, except that the nonce lives
// in the cipher value so that Encrypt and Decrypt do not allocate: flynn/noise
// builds each nonce in a fresh 12-byte slice, one heap allocation per record.
// The ciphertexts are byte-for-byte those of flynn/noise (see the tests).
type cipherFunc struct {
	name         string
	newAEAD      func(key []byte) (cipher.AEAD, error)
	littleEndian bool // ChaChaPoly encodes the counter little-endian, AESGCM big-endian
}

func (f cipherFunc) CipherName() string { return f.name }

func (f cipherFunc) Cipher(k [32]byte) noise.Cipher {
	a, err := f.newAEAD(k[:])
	if err != nil {
		// Only a wrong key length fails, and the key is always 32 bytes.
		panic("secure: " + err.Error())
	}
	return &aeadCipher{aead: a, littleEndian: f.littleEndian}
}

func newAES256GCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// aeadCipher is one keyed cipher. Each Noise CipherState gets its own, and a
// CipherState is used by one goroutine at a time, so the nonce buffer is not
// shared.
type aeadCipher struct {
	aead         cipher.AEAD
	littleEndian bool
	nonce        [12]byte // first 4 bytes stay zero
}

func (c *aeadCipher) setNonce(n uint64) []byte {
	if c.littleEndian {
		binary.LittleEndian.PutUint64(c.nonce[4:], n)
	} else {
		binary.BigEndian.PutUint64(c.nonce[4:], n)
	}
	return c.nonce[:]
}

func (c *aeadCipher) Encrypt(out []byte, n uint64, ad, plaintext []byte) []byte {
	return c.aead.Seal(out, c.setNonce(n), plaintext, ad)
}

func (c *aeadCipher) Decrypt(out []byte, n uint64, ad, ciphertext []byte) ([]byte, error) {
	return c.aead.Open(out, c.setNonce(n), ciphertext, ad)
}

var (
	_ noise.CipherFunc = cipherFunc{}
	_ noise.Cipher     = (*aeadCipher)(nil)
)
