package secure

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/recon-mri/recon/internal/keys"
)

// KeyIDSize is the length of a key id, the last field of the preamble.
const KeyIDSize = 16

// KeyID is the opaque, public name of one key for one role: the first
// KeyIDSize bytes of HKDF-SHA256 of the key with "recon/2 key id <role>" as
// info. It travels in the clear so that a server with many keys finds the
// right one in one map lookup; it reveals nothing of the key, and only links
// the sessions of one key (as their address already does).
type KeyID [KeyIDSize]byte

// DeriveKeyID returns k's key id for role r.
func DeriveKeyID(k keys.Key, r Role) (KeyID, error) {
	secret := k.Bytes()
	defer clear(secret)
	b, err := hkdf.Key(sha256.New, secret, nil, fmt.Sprintf("recon/%d key id %s", ProtocolVersion, r), KeyIDSize)
	if err != nil {
		return KeyID{}, fmt.Errorf("derive key id: %w", err)
	}
	return KeyID(b), nil
}

// NamedKey is one key a Keyring accepts, with the name its sessions get.
type NamedKey struct {
	// Name is what Conn.KeyName returns for a session of this key.
	Name string
	Key  keys.Key
	// V1 lets a client of protocol version 1 (no key id) complete the
	// handshake with this key, only so that it can be told to upgrade
	// (Conn.OldProtocol). At most one key of a keyring may have it.
	V1 bool
}

// Keyring is the set of keys a server side accepts for one role, found by
// key id in constant time. Replace swaps the whole set at once; a handshake
// uses the set it started with. Safe for concurrent use.
type Keyring struct {
	role Role
	set  atomic.Pointer[keySet]
}

type keySet struct {
	byID map[KeyID]*ringKey
	// dummy is used for an unknown key id: a random key nobody holds, so
	// an unknown id fails at the same step, in the same way and with the
	// same work as a wrong key.
	dummy *ringKey
	v1    *ringKey // the key a version-1 client may use, or nil
}

type ringKey struct {
	name string
	id   KeyID
	psk  []byte // this version's PSK
	psk1 []byte // version 1's PSK, for a V1 key
}

// NewKeyring returns a keyring for role r holding ks (see Replace).
func NewKeyring(r Role, ks []NamedKey) (*Keyring, error) {
	if !r.valid() {
		return nil, fmt.Errorf("secure: keyring for invalid role %d", uint8(r))
	}
	kr := &Keyring{role: r}
	if err := kr.Replace(ks); err != nil {
		return nil, err
	}
	return kr, nil
}

// Replace makes ks the accepted keys. It refuses an empty set, a zero key,
// the same key twice (also under two names), and more than one V1 key; then
// the keyring keeps its set.
func (kr *Keyring) Replace(ks []NamedKey) error {
	if len(ks) == 0 {
		return errors.New("secure: keyring without keys")
	}
	set := &keySet{byID: make(map[KeyID]*ringKey, len(ks))}
	for _, nk := range ks {
		if nk.Key.IsZero() {
			return fmt.Errorf("secure: key of %q is empty", nk.Name)
		}
		rk, err := newRingKey(nk.Name, nk.Key, kr.role, nk.V1)
		if err != nil {
			return err
		}
		if prev, dup := set.byID[rk.id]; dup {
			return fmt.Errorf("secure: %q and %q have the same key", prev.name, nk.Name)
		}
		set.byID[rk.id] = rk
		if nk.V1 {
			if set.v1 != nil {
				return fmt.Errorf("secure: %q and %q are both version-1 keys", set.v1.name, nk.Name)
			}
			set.v1 = rk
		}
	}
	dummy, err := keys.Generate()
	if err != nil {
		return err
	}
	if set.dummy, err = newRingKey("", dummy, kr.role, false); err != nil {
		return err
	}
	kr.set.Store(set)
	return nil
}

func newRingKey(name string, k keys.Key, r Role, v1 bool) (*ringKey, error) {
	id, err := DeriveKeyID(k, r)
	if err != nil {
		return nil, err
	}
	rk := &ringKey{name: name, id: id}
	if rk.psk, err = derivePSK(k, r, ProtocolVersion); err != nil {
		return nil, err
	}
	if v1 {
		if rk.psk1, err = derivePSK(k, r, 1); err != nil {
			return nil, err
		}
	}
	return rk, nil
}

// Has reports whether the keyring accepts the key with id under name: a
// session of a key that Replace removed, or moved to another name, is no
// longer valid.
func (kr *Keyring) Has(id KeyID, name string) bool {
	rk, ok := kr.set.Load().byID[id]
	return ok && rk.name == name
}

// Len returns the number of keys.
func (kr *Keyring) Len() int { return len(kr.set.Load().byID) }

// lookup returns the key with id, or the dummy key for an unknown id. It
// does the same work for both: one map lookup in a set of any size.
func (kr *Keyring) lookup(id KeyID) *ringKey {
	set := kr.set.Load()
	if rk, ok := set.byID[id]; ok {
		return rk
	}
	return set.dummy
}

func (kr *Keyring) v1() *ringKey { return kr.set.Load().v1 }
