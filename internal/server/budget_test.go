package server_test

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestControlMessageBudgetFull fills the server's budget for control
// messages with sessions that announce maximal messages and send them a
// byte at a time (each byte within the idle timeout): another session's
// large request (over protocol.MaxUnbudgetedMessage) waits as long as the
// idle timeout, then gets a retryable unavailable naming the cause, and
// its session ends. Small requests are served throughout, and large ones
// again once the budget is free.
func TestControlMessageBudgetFull(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Long enough that holders writing every tenth of it are never cut by
	// a late tick on a loaded machine.
	const idle = 3 * time.Second
	s := servertest.Start(t, servertest.Options{Server: server.Options{IdleTimeout: idle}})
	holders := int(protocol.MessageBudget / protocol.MaxMessageSize)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	release := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer release()
	for range holders {
		hc := rawClient(t, ctx, s)
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

	// A status request padded with white space to be over the size that
	// is read without a budget.
	largeStatus := rawFrame(`{"type":"status"}` + strings.Repeat(" ", protocol.MaxUnbudgetedMessage))

	// The holders take the whole budget as soon as the server has read
	// their lengths; until then a request may still be served.
	var busy error
	servertest.Eventually(t, pollTimeout, "a request is refused for want of budget", func() bool {
		rc := rawClient(t, ctx, s)
		start := time.Now()
		if _, err := rc.Write(largeStatus); err != nil {
			t.Fatal(err)
		}
		m, err := protocol.ReadMessage(rc)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		err = m.Decode(protocol.TypeStatusReply, &protocol.StatusReply{})
		if err == nil {
			return false
		}
		if waited := time.Since(start); waited < idle {
			t.Errorf("refused after %v, before the idle timeout of %v", waited, idle)
		}
		busy = err
		expectSessionEnd(t, rc)
		return true
	})
	if !protocol.IsCode(busy, protocol.CodeUnavailable) || !strings.Contains(busy.Error(), "busy") || !strings.Contains(busy.Error(), "try again") {
		t.Errorf("refusal %v, want unavailable: server busy ... try again", busy)
	}
	if _, err := rawStatus(rawClient(t, ctx, s)); err != nil {
		t.Errorf("a small request with the budget spent: %v", err)
	}

	release()
	checkServes(t, ctx, s)
}
