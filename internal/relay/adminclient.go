package relay

import (
	"context"
	"fmt"
	"sync"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// AdminClient is a session on a relay's admin listener, as `recon
// relay-admin` uses it. Requests are serialised; it is safe for concurrent
// use.
type AdminClient struct {
	mu   sync.Mutex
	conn *secure.Conn
}

// DialAdmin connects to a relay's admin listener at addr with
// RELAY_ADMIN_SHARED_KEY. A wrong key or port fails with an error wrapping
// secure.ErrAuth.
func DialAdmin(ctx context.Context, addr string, key keys.Key) (*AdminClient, error) {
	c, err := secure.Dial(ctx, addr, secure.Config{Key: key, Role: secure.RoleRelayAdmin})
	if err != nil {
		return nil, fmt.Errorf("connect to relay admin at %s: %w", addr, err)
	}
	return &AdminClient{conn: c}, nil
}

// Close ends the session.
func (a *AdminClient) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conn.CloseWrite()
	return a.conn.Close()
}

func (a *AdminClient) request(ctx context.Context, t, want protocol.Type, reply any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return roundTrip(ctx, a.conn, t, protocol.Empty{}, want, reply)
}

// Status asks for the relay's status.
func (a *AdminClient) Status(ctx context.Context) (*protocol.RelayStatus, error) {
	var st protocol.RelayStatus
	if err := a.request(ctx, protocol.TypeRelayStatus, protocol.TypeRelayStatusReply, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Backends asks for the relay's backends and their health.
func (a *AdminClient) Backends(ctx context.Context) (*protocol.RelayBackends, error) {
	var bs protocol.RelayBackends
	if err := a.request(ctx, protocol.TypeRelayBackends, protocol.TypeRelayBackendsReply, &bs); err != nil {
		return nil, err
	}
	return &bs, nil
}

// Clients asks for the client sessions connected to the relay.
func (a *AdminClient) Clients(ctx context.Context) (*protocol.RelayClients, error) {
	var cs protocol.RelayClients
	if err := a.request(ctx, protocol.TypeRelayClients, protocol.TypeRelayClientsReply, &cs); err != nil {
		return nil, err
	}
	return &cs, nil
}
