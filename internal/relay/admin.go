package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// serveAdmin answers a relay administrator's requests in sequence.
func (r *Relay) serveAdmin(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	r.adminMux.Serve(ctx, c, log, struct{}{})
}

// adminRequests is the table of an administrator session's requests.
func (r *Relay) adminRequests() *rpc.Mux[struct{}] {
	m := &rpc.Mux[struct{}]{Name: "relay", Unknown: "relay admin request", Budget: r.msgs,
		IdleTimeout: r.opts.IdleTimeout, EndLevel: slog.LevelInfo}
	rpc.Reply(m, protocol.TypeRelayStatus, protocol.TypeRelayStatusReply, func(context.Context, *rpc.Session[struct{}], *protocol.Empty) (*protocol.RelayStatus, error) {
		return r.Status(), nil
	})
	rpc.Reply(m, protocol.TypeRelayBackends, protocol.TypeRelayBackendsReply, func(context.Context, *rpc.Session[struct{}], *protocol.Empty) (*protocol.RelayBackends, error) {
		return r.Backends(), nil
	})
	rpc.Reply(m, protocol.TypeRelayClients, protocol.TypeRelayClientsReply, func(context.Context, *rpc.Session[struct{}], *protocol.Empty) (*protocol.RelayClients, error) {
		return r.Clients(), nil
	})
	rpc.Reply(m, protocol.TypeRelayReload, protocol.TypeRelayReloadReply, func(context.Context, *rpc.Session[struct{}], *protocol.Empty) (*protocol.ReloadReply, error) {
		return r.ReloadClientKeys()
	})
	return m
}

// Status describes the relay: version, uptime, clients, jobs and bytes
// relayed, backends up.
func (r *Relay) Status() *protocol.RelayStatus {
	now, total := r.clients.counts()
	up, _ := r.pool.split()
	return &protocol.RelayStatus{
		Version:          r.opts.Version,
		Protocol:         protocol.Version,
		UptimeSeconds:    time.Since(r.started).Seconds(),
		StartedAt:        r.started.UTC(),
		ClientsConnected: now,
		ClientsTotal:     total,
		JobsRelayed:      r.jobsRelayed.Load(),
		BytesIn:          r.bytesIn.Load(),
		BytesOut:         r.bytesOut.Load(),
		Backends:         len(r.pool.backends),
		BackendsHealthy:  len(up),
	}
}

// Backends describes every backend, in BACKEND_SERVERS order.
func (r *Relay) Backends() *protocol.RelayBackends {
	return &protocol.RelayBackends{Backends: r.pool.snapshot()}
}

// Clients lists the connected client sessions, oldest first.
func (r *Relay) Clients() *protocol.RelayClients {
	return &protocol.RelayClients{Clients: r.clients.snapshot()}
}
