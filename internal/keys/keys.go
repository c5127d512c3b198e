// Package keys generates, parses and redacts recon's pre-shared keys.
//
// A key is 32 random bytes written as url-safe base64 with padding (44
// characters): the format of Python's Fernet.generate_key(), so keys made for
// the Python prototype keep working. Parsing is lenient in form (surrounding
// whitespace, standard or url-safe alphabet, padding optional) and strict in
// substance (exactly 32 bytes, not all zero).
//
// A Key never reveals its value through fmt, log/slog or errors: String,
// GoString and LogValue all print REDACTED. Only Encode returns the text form,
// for writing a config file or printing from `recon keygen`.
package keys

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Size is the length of a key in bytes.
const Size = 32

// EncodedLen is the length of a key's canonical text form.
const EncodedLen = 44

// maxInputLen bounds the text Parse looks at, so a hostile config value is
// rejected before any decoding work.
const maxInputLen = 256

const redacted = "REDACTED"

var (
	// ErrPlaceholder is returned for a SET_YOUR_..._HERE value left in a
	// config file.
	ErrPlaceholder = errors.New("key is still a placeholder: generate one with `recon keygen` and put it in the config file")
	// ErrEmpty is returned for an empty value.
	ErrEmpty = errors.New("key is empty: generate one with `recon keygen`")
	// ErrInvalid is returned for a value that is not a valid key. Its text
	// never contains the value.
	ErrInvalid = errors.New("key is not valid: expected 32 bytes in base64 (44 characters, as printed by `recon keygen`)")
	// ErrAllZero is returned for a key of 32 zero bytes.
	ErrAllZero = errors.New("key is all zero bytes: generate a real one with `recon keygen`")
)

// Key is a 32-byte pre-shared key. The zero Key is not a valid key.
type Key struct {
	b   [Size]byte
	set bool
}

// Generate returns a fresh random key from crypto/rand.
func Generate() (Key, error) {
	var k Key
	if _, err := rand.Read(k.b[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	k.set = true
	return k, nil
}

// MustGenerate is Generate for callers that cannot proceed without
// randomness; it panics if the system's random source fails.
func MustGenerate() Key {
	k, err := Generate()
	if err != nil {
		panic(err)
	}
	return k
}

// IsPlaceholder reports whether s looks like a SET_YOUR_..._HERE placeholder
// from the example config files.
func IsPlaceholder(s string) bool {
	s = strings.ToUpper(strings.TrimSpace(s))
	return strings.HasPrefix(s, "SET_YOUR_") && strings.HasSuffix(s, "_HERE")
}

// Parse reads a key from its text form. Surrounding whitespace is ignored;
// the standard and url-safe base64 alphabets are accepted, with or without
// padding. The decoded key must be exactly 32 bytes and not all zero. Errors
// never contain the input.
func Parse(s string) (Key, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Key{}, ErrEmpty
	case IsPlaceholder(s):
		return Key{}, ErrPlaceholder
	case len(s) > maxInputLen:
		return Key{}, ErrInvalid
	}
	// Normalise to the url-safe alphabet without padding. A string that mixes
	// both alphabets is still one key's worth of bits; there is no ambiguity.
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	if base64.RawURLEncoding.DecodedLen(len(s)) != Size {
		return Key{}, ErrInvalid
	}
	var k Key
	n, err := base64.RawURLEncoding.Strict().Decode(k.b[:], []byte(s))
	if err != nil || n != Size {
		return Key{}, ErrInvalid
	}
	var zero [Size]byte
	if subtle.ConstantTimeCompare(k.b[:], zero[:]) == 1 {
		return Key{}, ErrAllZero
	}
	k.set = true
	return k, nil
}

// IsZero reports whether k holds no key (the zero value).
func (k Key) IsZero() bool { return !k.set }

// Bytes returns a copy of the key's bytes.
func (k Key) Bytes() []byte {
	b := k.b
	return b[:]
}

// Encode returns the canonical text form: url-safe base64 with padding.
func (k Key) Encode() string {
	return base64.URLEncoding.EncodeToString(k.b[:])
}

// Equal reports whether two keys are the same, in constant time.
func (k Key) Equal(o Key) bool {
	return k.set == o.set && subtle.ConstantTimeCompare(k.b[:], o.b[:]) == 1
}

// String returns REDACTED, so a key never leaks through fmt.
func (k Key) String() string { return redacted }

// GoString returns REDACTED, so a key never leaks through %#v.
func (k Key) GoString() string { return redacted }

// LogValue returns REDACTED, so a key never leaks through log/slog.
func (k Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText refuses to serialise a key by accident (encoding/json and
// friends); use Encode where the text form is really wanted.
func (k Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Format prints REDACTED for every verb, including %v, %x and %+v.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }
