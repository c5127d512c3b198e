package relay

import (
	"context"
	"fmt"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// AdminClient is a session on a relay's admin listener, as `recon
// relay-admin` uses it. Requests are serialised; it is safe for concurrent
// use.
type AdminClient struct {
	c *rpc.Client
}

// DialAdmin connects to a relay's admin listener at addr with
// RELAY_ADMIN_SHARED_KEY. A wrong key or port fails with an error wrapping
// secure.ErrAuth.
func DialAdmin(ctx context.Context, addr string, key keys.Key) (*AdminClient, error) {
	c, err := rpc.Dial(ctx, addr, secure.Config{Key: key, Role: secure.RoleRelayAdmin})
	if err != nil {
		return nil, fmt.Errorf("connect to relay admin at %s: %w", addr, err)
	}
	return &AdminClient{c: c}, nil
}

// Close ends the session.
func (a *AdminClient) Close() error { return a.c.Close() }

// adminCall makes request t of a, whose reply is a T of type want, within
// ctx's deadline (or backendReplyTimeout).
func adminCall[T any](ctx context.Context, a *AdminClient, t, want protocol.Type) (*T, error) {
	ctx, cancel := replyBound(ctx)
	defer cancel()
	var reply T
	if err := a.c.Call(ctx, t, protocol.Empty{}, want, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Status asks for the relay's status.
func (a *AdminClient) Status(ctx context.Context) (*protocol.RelayStatus, error) {
	return adminCall[protocol.RelayStatus](ctx, a, protocol.TypeRelayStatus, protocol.TypeRelayStatusReply)
}

// Backends asks for the relay's backends and their health.
func (a *AdminClient) Backends(ctx context.Context) (*protocol.RelayBackends, error) {
	return adminCall[protocol.RelayBackends](ctx, a, protocol.TypeRelayBackends, protocol.TypeRelayBackendsReply)
}

// Clients asks for the client sessions connected to the relay.
func (a *AdminClient) Clients(ctx context.Context) (*protocol.RelayClients, error) {
	return adminCall[protocol.RelayClients](ctx, a, protocol.TypeRelayClients, protocol.TypeRelayClientsReply)
}

// Reload has the relay read its CLIENT_KEYS_FILE again.
func (a *AdminClient) Reload(ctx context.Context) (*protocol.ReloadReply, error) {
	return adminCall[protocol.ReloadReply](ctx, a, protocol.TypeRelayReload, protocol.TypeRelayReloadReply)
}
