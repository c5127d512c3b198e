package protocol

import "time"

// Relay admin requests, on a relay's admin listener only (role
// relay-admin). Each has an empty body and is answered with its reply type
// or TypeError.
const (
	TypeRelayStatus        Type = "relay_status" // Empty → RelayStatus
	TypeRelayStatusReply   Type = "relay_status_reply"
	TypeRelayBackends      Type = "relay_backends" // Empty → RelayBackends
	TypeRelayBackendsReply Type = "relay_backends_reply"
	TypeRelayClients       Type = "relay_clients" // Empty → RelayClients
	TypeRelayClientsReply  Type = "relay_clients_reply"
	TypeRelayReload        Type = "relay_reload" // Empty → ReloadReply
	TypeRelayReloadReply   Type = "relay_reload_reply"
)

// RelayStatus describes a relay for its administrators.
type RelayStatus struct {
	Version          string    `json:"version"`
	Protocol         int       `json:"protocol"`
	UptimeSeconds    float64   `json:"uptime_seconds"`
	StartedAt        time.Time `json:"started_at"`
	ClientsConnected int       `json:"clients_connected"` // client sessions open now
	ClientsTotal     int64     `json:"clients_total"`     // client sessions since the start
	JobsRelayed      int64     `json:"jobs_relayed"`      // submissions placed on a backend since the start
	BytesIn          int64     `json:"bytes_in"`          // file bytes from clients to backends
	BytesOut         int64     `json:"bytes_out"`         // file bytes from backends to clients
	Backends         int       `json:"backends"`
	BackendsHealthy  int       `json:"backends_healthy"`
}

// BackendInfo is one backend server as the relay sees it.
type BackendInfo struct {
	Address string `json:"address"`
	Healthy bool   `json:"healthy"`
	// LastCheck is when the last health check ended; zero before the first.
	LastCheck time.Time `json:"last_check,omitzero"`
	// LastError is why the backend was last marked down ("" if it never
	// was); it stays after the backend is back up, with LastErrorAt.
	LastError      string    `json:"last_error"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
	LatencySeconds float64   `json:"latency_seconds"` // of the last passed check: connect, handshake, status
	Version        string    `json:"version,omitempty"`
	Queued         int       `json:"queued"`  // as of the last check, plus jobs placed since
	Running        int       `json:"running"` // as of the last check
	Workers        int       `json:"workers"` // its maximum of concurrent jobs, as of the last check
	// FreeWorkers is Workers less the running, queued and uploading jobs:
	// how many more jobs would start at once. Placement prefers the most.
	FreeWorkers int   `json:"free_workers"`
	Uploading   int   `json:"uploading"`
	JobsPlaced  int64 `json:"jobs_placed"` // by this relay since its start
	// TakesIdentities: the backend accepts the relay's client identities
	// (its RELAY_SHARED_KEY is the relay's BACKEND_SHARED_KEY), as of the
	// last check. Without it every job through the relay belongs to one
	// identity there.
	TakesIdentities bool `json:"takes_identities"`
}

// RelayBackends lists a relay's backends in BACKEND_SERVERS order.
type RelayBackends struct {
	Backends []BackendInfo `json:"backends"`
}

// RelayClientInfo is one client session connected to a relay.
type RelayClientInfo struct {
	Address string `json:"address"`
	// Identity is the client identity of the session's key.
	Identity       string    `json:"identity,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	// Request is the request in progress ("" between requests), with the
	// job and backend it concerns when known.
	Request  string `json:"request,omitempty"`
	JobID    string `json:"job_id,omitempty"`
	Backend  string `json:"backend,omitempty"`
	Requests int64  `json:"requests"`
	BytesIn  int64  `json:"bytes_in"`  // file bytes received from the client
	BytesOut int64  `json:"bytes_out"` // file bytes sent to the client
}

// RelayClients lists the client sessions connected to a relay, oldest
// first.
type RelayClients struct {
	Clients []RelayClientInfo `json:"clients"`
}
