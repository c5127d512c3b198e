package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// serveAdmin answers a relay administrator's requests in sequence.
func (r *Relay) serveAdmin(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	for {
		m, err := r.msgs.ReadMessage(ctx, c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Info("admin session ended", "err", err)
			}
			if pe := messageError(err); pe != nil {
				r.armWrite(c)
				protocol.WriteError(c, pe)
			}
			return
		}
		r.armWrite(c)
		var (
			typ   protocol.Type
			reply any
		)
		if err := m.Decode(m.Type, &protocol.Empty{}); err != nil {
			protocol.WriteError(c, protocol.Errorf(protocol.CodeBadRequest, "%v", err))
			return
		}
		switch m.Type {
		case protocol.TypeRelayStatus:
			typ, reply = protocol.TypeRelayStatusReply, r.Status()
		case protocol.TypeRelayBackends:
			typ, reply = protocol.TypeRelayBackendsReply, r.Backends()
		case protocol.TypeRelayClients:
			typ, reply = protocol.TypeRelayClientsReply, r.Clients()
		default:
			protocol.WriteError(c, protocol.Errorf(protocol.CodeBadRequest, "unknown relay admin request %q", truncate(string(m.Type), 40)))
			return
		}
		log.Debug("admin request", "request", string(m.Type))
		if protocol.WriteMessage(c, typ, reply) != nil {
			return
		}
	}
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
