package relay

import (
	"fmt"
	"slices"

	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// The relay authenticates its clients itself, with the same identities as
// a server (SHARED_KEY_RELAY_TO_CLIENTS as "default", CLIENT_KEYS_FILE),
// and names each client's identity to the backends (act_as) that accept
// it: those whose RELAY_SHARED_KEY is the relay's BACKEND_SHARED_KEY
// (their status says relay_session). To a backend without it the relay is
// one client, and every job through the relay belongs to that key's
// identity: the relay logs so when the backend comes up.

// submissionRoute is the key of identity's submission sid in the route
// store: submission ids are each identity's own, so one identity's cannot
// move another's upload to another backend. The identity default keeps
// the bare id, as the routes from before identities have it (neither
// names nor ids contain '/').
func submissionRoute(identity, sid string) string {
	if identity == config.DefaultIdentity || sid == "" {
		return sid
	}
	return identity + "/" + sid
}

// clientKeys builds the named keys of the client listener.
func clientKeys(cfg *config.Relay) ([]secure.NamedKey, map[string][]keys.Key, error) {
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
	return nks, current, nil
}

func newClientKeyring(cfg *config.Relay) (*secure.Keyring, map[string][]keys.Key, error) {
	nks, current, err := clientKeys(cfg)
	if err != nil {
		return nil, nil, err
	}
	kr, err := secure.NewKeyring(secure.RoleClient, nks)
	if err != nil {
		return nil, nil, fmt.Errorf("client keys: %w", err)
	}
	return kr, current, nil
}

// ReloadClientKeys reads CLIENT_KEYS_FILE again (SIGHUP, recon relay-admin
// reload): new identities may connect at once; the sessions of a removed
// identity, or of a key it no longer has, are closed (and with them their
// sessions to backends), and new ones refused. A file that fails to load
// leaves the keys in force and the error says why.
func (r *Relay) ReloadClientKeys() (*protocol.ReloadReply, error) {
	nks, current, err := clientKeys(r.cfg)
	if err == nil {
		err = r.keyring.Replace(nks)
	}
	if err != nil {
		r.log.Error("client keys not reloaded; the previous ones stay in force", "err", err)
		return nil, protocol.Errorf(protocol.CodeBadRequest, "client keys not reloaded; the previous ones stay in force: %v", err)
	}
	r.idMu.Lock()
	rep := &protocol.ReloadReply{Identities: len(current)}
	for name, ks := range current {
		old, ok := r.identities[name]
		switch {
		case !ok:
			rep.Added = append(rep.Added, name)
		case !slices.EqualFunc(old, ks, keys.Key.Equal):
			rep.Changed = append(rep.Changed, name)
		}
	}
	for name := range r.identities {
		if _, ok := current[name]; !ok {
			rep.Removed = append(rep.Removed, name)
		}
	}
	r.identities = current
	r.idMu.Unlock()
	gone := r.clients.without(r.keyring)
	for _, cs := range gone {
		cs.conn.Close()
	}
	rep.ClosedSessions = len(gone)
	slices.Sort(rep.Added)
	slices.Sort(rep.Removed)
	slices.Sort(rep.Changed)
	r.log.Info("client keys reloaded", "identities", rep.Identities, "added", rep.Added, "removed", rep.Removed,
		"changed", rep.Changed, "sessions_closed", rep.ClosedSessions)
	return rep, nil
}

// without returns the sessions whose key kr no longer has.
func (t *clientTable) without(kr *secure.Keyring) []*clientSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*clientSession
	for _, cs := range t.m {
		if cs.conn != nil && !kr.Has(cs.conn.KeyID(), cs.conn.KeyName()) {
			out = append(out, cs)
		}
	}
	return out
}
