package server

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// relayKeyName is the name the client keyring gives RELAY_SHARED_KEY. It
// is not a valid identity name, so no client key can be taken for it.
const relayKeyName = "@relay"

// sessionState is what the server keeps about one client session.
type sessionState struct {
	// Identity is the name of the client identity the session acts for
	// ("default" for SHARED_KEY); it owns the jobs the session submits
	// and is the only one whose jobs the session sees. It is "" on a
	// relay's session until the relay names its client (act_as).
	Identity string

	// relay is set for a session authenticated with RELAY_SHARED_KEY.
	relay bool
	// acted is set once a relay's session has named its client. It and
	// Identity change only under identities.mu, once, before the
	// session's next request.
	acted bool

	conn    *secure.Conn
	keyID   secure.KeyID
	keyName string

	// hash is the session's end-to-end hash (protocol.HashSHA256 unless
	// its hello chose another); hello is set once the session said hello,
	// and transferred once it made its first submit or fetch: a hello
	// comes at most once, before that.
	hash        string
	hello       bool
	transferred bool
}

// sessionHash returns the session's end-to-end hash and marks the session
// as having transferred (no hello after this).
func sessionHash(ss *session) string {
	ss.State.transferred = true
	if ss.State.hash == "" {
		return protocol.HashSHA256
	}
	return ss.State.hash
}

// hello answers a client's hello: it chooses the session's end-to-end
// hash from those the client offers.
func hello(ss *session, req *protocol.Hello) (*protocol.HelloReply, error) {
	st := ss.State
	if err := protocol.CheckHello(req, st.hello, st.transferred); err != nil {
		return nil, err
	}
	st.hello, st.hash = true, protocol.ChooseHash(req.Hashes)
	ss.Log = ss.Log.With("hash", st.hash)
	return &protocol.HelloReply{Protocol: protocol.Version, Hash: st.hash}, nil
}

// identities holds the client keyring and the open client sessions, so
// that a reload can close the sessions of keys it removed.
type identities struct {
	keyring *secure.Keyring

	mu       sync.Mutex
	current  map[string][]keys.Key // identity → its keys, as last loaded
	sessions map[*sessionState]struct{}
}

// clientKeys builds the named keys of the client listener: each identity's
// keys, and RELAY_SHARED_KEY.
func clientKeys(cfg *config.Server) ([]secure.NamedKey, map[string][]keys.Key, error) {
	ids, err := cfg.Identities()
	if err != nil {
		return nil, nil, err
	}
	var nks []secure.NamedKey
	current := make(map[string][]keys.Key, len(ids))
	for _, id := range ids {
		for _, k := range id.Keys {
			nks = append(nks, secure.NamedKey{Name: id.Name, Key: k, V1: id.Line == 0})
		}
		current[id.Name] = id.Keys
	}
	if !cfg.RelaySharedKey.IsZero() {
		nks = append(nks, secure.NamedKey{Name: relayKeyName, Key: cfg.RelaySharedKey})
	}
	return nks, current, nil
}

func newIdentities(cfg *config.Server) (*identities, error) {
	nks, current, err := clientKeys(cfg)
	if err != nil {
		return nil, err
	}
	kr, err := secure.NewKeyring(secure.RoleClient, nks)
	if err != nil {
		return nil, fmt.Errorf("client keys: %w", err)
	}
	return &identities{keyring: kr, current: current, sessions: map[*sessionState]struct{}{}}, nil
}

// open registers the session on c; nil when a reload removed its key
// since its handshake (the reload's sweep could not see it).
func (ids *identities) open(c *secure.Conn) *sessionState {
	st := &sessionState{conn: c, keyID: c.KeyID(), keyName: c.KeyName()}
	if st.keyName == relayKeyName {
		st.relay = true
	} else {
		st.Identity = st.keyName
	}
	ids.mu.Lock()
	defer ids.mu.Unlock()
	// A reload replaces the keyring before it sweeps under mu: a session
	// registered after the sweep sees the new keyring here.
	if !ids.keyring.Has(st.keyID, st.keyName) {
		return nil
	}
	ids.sessions[st] = struct{}{}
	return st
}

func (ids *identities) close(st *sessionState) {
	ids.mu.Lock()
	delete(ids.sessions, st)
	ids.mu.Unlock()
}

// reload reads CLIENT_KEYS_FILE again and puts it in force, then closes
// the sessions whose key is gone. A file that fails to load changes
// nothing.
func (ids *identities) reload(cfg *config.Server, log *slog.Logger) (*protocol.ReloadReply, error) {
	nks, current, err := clientKeys(cfg)
	if err == nil {
		err = ids.keyring.Replace(nks)
	}
	if err != nil {
		log.Error("client keys not reloaded; the previous ones stay in force", "err", err)
		return nil, protocol.Errorf(protocol.CodeBadRequest, "client keys not reloaded; the previous ones stay in force: %v", err)
	}
	ids.mu.Lock()
	rep := &protocol.ReloadReply{Identities: len(current)}
	for name, ks := range current {
		old, ok := ids.current[name]
		switch {
		case !ok:
			rep.Added = append(rep.Added, name)
		case !sameKeys(old, ks):
			rep.Changed = append(rep.Changed, name)
		}
	}
	for name := range ids.current {
		if _, ok := current[name]; !ok {
			rep.Removed = append(rep.Removed, name)
		}
	}
	ids.current = current
	var gone []*sessionState
	for st := range ids.sessions {
		_, known := current[st.Identity]
		if !ids.keyring.Has(st.keyID, st.keyName) || st.acted && !known {
			gone = append(gone, st)
			delete(ids.sessions, st)
		}
	}
	ids.mu.Unlock()
	for _, st := range gone {
		st.conn.Close()
	}
	rep.ClosedSessions = len(gone)
	slices.Sort(rep.Added)
	slices.Sort(rep.Removed)
	slices.Sort(rep.Changed)
	log.Info("client keys reloaded", "identities", rep.Identities, "added", rep.Added, "removed", rep.Removed,
		"changed", rep.Changed, "sessions_closed", rep.ClosedSessions)
	return rep, nil
}

func sameKeys(a, b []keys.Key) bool {
	return slices.EqualFunc(a, b, keys.Key.Equal)
}

// act makes st, a relay's session, act for identity if it is in force. It
// holds the lock a reload reads st under.
func (ids *identities) act(st *sessionState, identity string) bool {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if _, ok := ids.current[identity]; !ok {
		return false
	}
	st.Identity, st.acted = identity, true
	return true
}

// names returns the identities in force, sorted.
func (ids *identities) names() []string {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	return slices.Sorted(maps.Keys(ids.current))
}

// ReloadClientKeys reads CLIENT_KEYS_FILE again (SIGHUP, recon admin
// reload): new identities may connect at once; the sessions of a removed
// identity, or of a key it no longer has, are closed, and new ones are
// refused; the jobs of every identity stay. A file that fails to load
// leaves the keys in force and the error says why.
func (s *Server) ReloadClientKeys() (*protocol.ReloadReply, error) {
	rep, err := s.ids.reload(s.cfg, s.log)
	var added, removed, changed []string
	if rep != nil {
		added, removed, changed = rep.Added, rep.Removed, rep.Changed
	}
	// The audit trail names the identities added, removed and changed (or
	// why the file was refused), never a key.
	if aerr := s.recordKeysReload(context.Background(), added, removed, changed, err); aerr != nil && err == nil {
		return nil, aerr
	}
	return rep, err
}

// actAs answers a relay's act_as: from now on the session acts for the
// relay's client identity, which must be one of this server's (so that
// removing it here ends its sessions through the relay too). Only a
// session of RELAY_SHARED_KEY may, once and before anything else; any
// other is refused and ends.
func (s *Server) actAs(ss *session, req *protocol.ActAs) error {
	st := ss.State
	switch {
	case !st.relay:
		return rpc.Fatal(protocol.Errorf(protocol.CodeBadRequest, "act_as is for a relay's session (RELAY_SHARED_KEY) only"))
	case st.acted:
		return rpc.Fatal(protocol.Errorf(protocol.CodeBadRequest, "act_as was already sent on this session"))
	case !config.ValidIdentity(req.Identity):
		return rpc.Fatal(protocol.Errorf(protocol.CodeBadRequest, "act_as names no valid identity"))
	case !s.ids.act(st, req.Identity):
		ss.Log.Warn("relay names an identity this server does not have", "acting_for", req.Identity)
		return rpc.Fatal(protocol.Errorf(protocol.CodeBadRequest,
			"the server does not know the client identity %s: it must be in the server's CLIENT_KEYS_FILE (or be default, with SHARED_KEY) as in the relay's", req.Identity))
	}
	ss.Log = ss.Log.With("identity", req.Identity)
	return nil
}

// owner returns the identity a job request acts for; a relay's session
// that has not named its client has none.
func owner(ss *session) (string, error) {
	if ss.State.Identity == "" {
		return "", protocol.Errorf(protocol.CodeBadRequest, "a relay's session must name its client (act_as) first")
	}
	return ss.State.Identity, nil
}
