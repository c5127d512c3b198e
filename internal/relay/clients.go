package relay

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// clientSession is one connected client, for relay-admin clients.
type clientSession struct {
	id       string
	addr     string
	identity string       // of the client's key: what the backends are told
	conn     *secure.Conn // closed when a reload removes its key
	since    time.Time

	requests atomic.Int64
	bytesIn  atomic.Int64
	bytesOut atomic.Int64

	// hello, transferred and hash are the session's own (its goroutine
	// only): it said hello; it made a submit or fetch (no hello after
	// that); the hash its hello chose ("" is SHA-256).
	hello, transferred bool
	hash               string

	mu      sync.Mutex
	request string
	jobID   string
	backend string
}

func (cs *clientSession) begin(request string) {
	cs.requests.Add(1)
	cs.mu.Lock()
	cs.request, cs.jobID, cs.backend = request, "", ""
	cs.mu.Unlock()
}

// about records the job and backend the current request concerns.
func (cs *clientSession) about(jobID, backend string) {
	cs.mu.Lock()
	if jobID != "" {
		cs.jobID = jobID
	}
	if backend != "" {
		cs.backend = backend
	}
	cs.mu.Unlock()
}

func (cs *clientSession) end() {
	cs.mu.Lock()
	cs.request, cs.jobID, cs.backend = "", "", ""
	cs.mu.Unlock()
}

// clientTable is the set of connected clients.
type clientTable struct {
	mu    sync.Mutex
	m     map[string]*clientSession
	total int64
}

// add registers the session on c; nil when kr no longer has its key (a
// reload removed it during the handshake: the reload's sweep, under the
// same lock after the keyring changed, could not see it).
func (t *clientTable) add(id string, c *secure.Conn, kr *secure.Keyring) *clientSession {
	cs := &clientSession{id: id, addr: c.RemoteAddr().String(), identity: c.KeyName(), conn: c, since: time.Now()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if kr != nil && !kr.Has(c.KeyID(), c.KeyName()) {
		return nil
	}
	t.m[id] = cs
	t.total++
	return cs
}

func (t *clientTable) remove(cs *clientSession) {
	t.mu.Lock()
	delete(t.m, cs.id)
	t.mu.Unlock()
}

func (t *clientTable) counts() (now int, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m), t.total
}

// snapshot lists the connected clients, oldest first.
func (t *clientTable) snapshot() []protocol.RelayClientInfo {
	t.mu.Lock()
	list := make([]*clientSession, 0, len(t.m))
	for _, cs := range t.m {
		list = append(list, cs)
	}
	t.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].since.Before(list[j].since) })
	out := make([]protocol.RelayClientInfo, 0, len(list))
	for _, cs := range list {
		cs.mu.Lock()
		ci := protocol.RelayClientInfo{
			Address:        cs.addr,
			Identity:       cs.identity,
			ConnectedSince: cs.since.UTC(),
			Request:        cs.request,
			JobID:          cs.jobID,
			Backend:        cs.backend,
		}
		cs.mu.Unlock()
		ci.Requests = cs.requests.Load()
		ci.BytesIn = cs.bytesIn.Load()
		ci.BytesOut = cs.bytesOut.Load()
		out = append(out, ci)
	}
	return out
}
