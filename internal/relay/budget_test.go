package relay_test

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/relay"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestRelayControlMessageBudgetFull is the server's
// TestControlMessageBudgetFull against a relay: clients that announce
// maximal messages and trickle them hold the relay's whole budget; a large
// request of another client waits the idle timeout, then gets a retryable
// unavailable; small requests are served throughout, large ones again once
// the holders are gone.
func TestRelayControlMessageBudgetFull(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	// Long enough that holders writing every tenth of it are never cut by
	// a late tick on a loaded machine.
	const idle = 3 * time.Second
	r := startRelayWith(t, writeRelayConfig(t, t.TempDir(), []string{bs[0].Addr().String()}, key, nil), relay.Options{IdleTimeout: idle})
	k, err := keys.Parse(r.Key)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() *secure.Conn {
		c, err := secure.Dial(ctx, r.Addr().String(), secure.Config{Key: k, Role: secure.RoleClient})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	frame := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
	// status answers a status request on a new session: nil, or the
	// relay's error.
	status := func(raw []byte) error {
		c := dial()
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := protocol.ReadMessage(c)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return m.Decode(protocol.TypeStatusReply, &protocol.StatusReply{})
	}
	small := frame(`{"type":"status"}`)
	large := frame(`{"type":"status"}` + strings.Repeat(" ", protocol.MaxUnbudgetedMessage))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	release := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer release()
	for range protocol.MessageBudget / protocol.MaxMessageSize {
		hc := dial()
		wg.Go(func() {
			hdr := binary.BigEndian.AppendUint32(nil, protocol.MaxMessageSize)
			if _, err := hc.Write(append(hdr, `{"type":"status","body":{"k":"`...)); err != nil {
				t.Error(err)
				return
			}
			tick := time.NewTicker(idle / 10)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					hc.Close()
					return
				case <-tick.C:
					if _, err := hc.Write([]byte("v")); err != nil {
						t.Errorf("holder: %v", err)
						return
					}
				}
			}
		})
	}
	var busy error
	servertest.Eventually(t, 30*time.Second, "a large request is refused for want of budget", func() bool {
		busy = status(large)
		return busy != nil
	})
	if !protocol.IsCode(busy, protocol.CodeUnavailable) || !strings.Contains(busy.Error(), "relay busy") || !strings.Contains(busy.Error(), "try again") {
		t.Errorf("refusal %v, want unavailable: relay busy ... try again", busy)
	}
	if err := status(small); err != nil {
		t.Errorf("a small request with the budget spent: %v", err)
	}
	release()
	if err := status(large); err != nil {
		t.Errorf("a large request once the holders are gone: %v", err)
	}
}
