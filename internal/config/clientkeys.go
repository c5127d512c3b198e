package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/recon-mri/recon/internal/keys"
)

// Client identities (CLIENT_KEYS_FILE).
const (
	// DefaultIdentity is the identity of SHARED_KEY (and of the relay's
	// SHARED_KEY_RELAY_TO_CLIENTS).
	DefaultIdentity = "default"
	// MaxIdentityLen is the longest identity name, in bytes.
	MaxIdentityLen = 64
	// MaxKeysPerIdentity is how many keys one identity may hold at once:
	// the old and the new one during a rotation.
	MaxKeysPerIdentity = 2
	// MaxClientKeysFileSize is the largest CLIENT_KEYS_FILE read, in bytes
	// (about 100,000 identities with two keys each).
	MaxClientKeysFileSize = 16 << 20
)

// Identity is one client identity: its name and the keys it may use.
type Identity struct {
	Name string
	Keys []keys.Key // one, or two during a rotation
	Line int        // in CLIENT_KEYS_FILE; 0 for SHARED_KEY
}

// ValidIdentity reports whether name is a valid identity name: 1 to 64
// letters, digits, '-', '_' or '.'.
func ValidIdentity(name string) bool {
	if name == "" || len(name) > MaxIdentityLen {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Identities returns the server's client identities: "default" for
// SHARED_KEY when it is set, then those of CLIENT_KEYS_FILE. It reads the
// file each time it is called (a reload calls it again). A key used twice,
// or equal to SERVER_ADMIN_SHARED_KEY or RELAY_SHARED_KEY, is an error
// naming the line; errors never contain a key.
func (c *Server) Identities() ([]Identity, error) {
	return loadIdentities(c.ClientKeysFile, c.SharedKey, map[string]keys.Key{
		"SERVER_ADMIN_SHARED_KEY": c.AdminSharedKey, "RELAY_SHARED_KEY": c.RelaySharedKey})
}

// Identities returns the relay's client identities: "default" for
// SHARED_KEY_RELAY_TO_CLIENTS when it is set, then those of its
// CLIENT_KEYS_FILE; as Server.Identities.
func (c *Relay) Identities() ([]Identity, error) {
	return loadIdentities(c.ClientKeysFile, c.ClientSharedKey, map[string]keys.Key{
		"RELAY_ADMIN_SHARED_KEY": c.AdminSharedKey, "BACKEND_SHARED_KEY": c.BackendSharedKey})
}

func loadIdentities(path string, shared keys.Key, others map[string]keys.Key) ([]Identity, error) {
	var ids []Identity
	if !shared.IsZero() {
		ids = append(ids, Identity{Name: DefaultIdentity, Keys: []keys.Key{shared}})
	}
	if path != "" {
		file, err := readClientKeys(path)
		if err != nil {
			return nil, err
		}
		ids = append(ids, file...)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no client key: set SHARED_KEY or CLIENT_KEYS_FILE")
	}
	// Every key once, and none a key of another role.
	type use struct {
		name string
		line int
	}
	seen := map[[keys.Size]byte]use{}
	where := func(u use) string {
		if u.line == 0 {
			return "SHARED_KEY"
		}
		return fmt.Sprintf("line %d (%s)", u.line, u.name)
	}
	for _, id := range ids {
		for _, k := range id.Keys {
			for role, o := range others {
				if !o.IsZero() && k.Equal(o) {
					return nil, &ParseError{File: path, Line: id.Line, Msg: fmt.Sprintf(
						"the key of %s is %s; each role needs its own: generate another with recon keygen --name %s", id.Name, role, id.Name)}
				}
			}
			b := [keys.Size]byte(k.Bytes())
			if prev, dup := seen[b]; dup {
				return nil, &ParseError{File: path, Line: id.Line, Msg: fmt.Sprintf(
					"%s has the same key as %s; each identity needs its own: generate another with recon keygen --name %s",
					id.Name, where(prev), id.Name)}
			}
			seen[b] = use{id.Name, id.Line}
		}
	}
	return ids, nil
}

// readClientKeys parses a CLIENT_KEYS_FILE: one `NAME = KEY` or
// `NAME = KEY1,KEY2` per line, '#' comments, blank lines.
func readClientKeys(path string) ([]Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("CLIENT_KEYS_FILE: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("CLIENT_KEYS_FILE: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, &ParseError{File: path, Msg: "CLIENT_KEYS_FILE is not a regular file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxClientKeysFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read CLIENT_KEYS_FILE %s: %w", path, err)
	}
	if len(data) > MaxClientKeysFileSize {
		return nil, &ParseError{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", MaxClientKeysFileSize)}
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var ids []Identity
	names := map[string]int{}
	for n := 1; len(data) > 0; n++ {
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		fail := func(format string, args ...any) error {
			return &ParseError{File: path, Line: n, Msg: fmt.Sprintf(format, args...)}
		}
		if !utf8.Valid(raw) {
			return nil, fail("not valid UTF-8")
		}
		line := string(bytes.TrimSuffix(raw, []byte("\r")))
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok {
			return nil, fail("expected NAME = KEY")
		}
		// The messages never quote a name that is not valid: it may be a
		// pasted key.
		if !ValidIdentity(name) {
			return nil, fail("the name is not valid: 1 to %d letters, digits, '-', '_' or '.'", MaxIdentityLen)
		}
		if name == DefaultIdentity {
			return nil, fail("%q is the identity of SHARED_KEY; give this client another name", DefaultIdentity)
		}
		if first, dup := names[name]; dup {
			return nil, fail("%s is listed twice (first on line %d); put both keys on one line: %s = KEY1,KEY2", name, first, name)
		}
		names[name] = n
		parts := strings.Split(value, ",")
		if len(parts) > MaxKeysPerIdentity {
			return nil, fail("%s has %d keys; at most %d (the old and the new one during a rotation)", name, len(parts), MaxKeysPerIdentity)
		}
		id := Identity{Name: name, Line: n}
		for i, p := range parts {
			k, err := keys.Parse(p)
			if err != nil {
				return nil, fail("key %d of %s: %v", i+1, name, err)
			}
			id.Keys = append(id.Keys, k)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
