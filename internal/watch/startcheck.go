package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/recon-mri/recon/client"
)

const (
	// startAuthTries is how many times the start check makes its status
	// round trip while the server closes the handshake without answering,
	// waiting RetryMin, then twice as long, between them: a busy server
	// passes within that, a wrong key or a refused address does not.
	startAuthTries = 4
	// startCheckTimeout bounds one round trip of the start check.
	startCheckTimeout = 30 * time.Second
)

// checkDir says what is wrong with the watched directory at start: a
// misspelt CLIENT_WATCH_DIRECTORY would otherwise be retried for ever.
// (Once running, a directory that goes away is waited for.)
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("CLIENT_WATCH_DIRECTORY %s does not exist: create it, or correct the path", dir)
	case err != nil:
		return fmt.Errorf("CLIENT_WATCH_DIRECTORY: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("CLIENT_WATCH_DIRECTORY %s is not a directory", dir)
	}
	return nil
}

// errHandshake is what the daemon says of a server that does not accept
// its handshake.
const errHandshake = "the server refused the handshake: check SHARED_KEY (the server's SHARED_KEY from its recon.opts, " +
	"or SHARED_KEY_RELAY_TO_CLIENTS of a relay), SERVER_PORT (the client port, not the admin port) " +
	"and that the server's TRUSTED_IPS allows this computer"

// checkServer makes a status round trip with the server at start, so that
// a wrong key or port is reported at once instead of with every
// submission. A server that cannot be reached (down, restarting) is not
// fatal: the daemon carries on and the submitter retries. A handshake
// refused startAuthTries times in a row is.
func (w *Watcher) checkServer(ctx context.Context) error {
	delay := w.cfg.RetryMin
	for try := 1; ; try++ {
		err := w.statusOnce(ctx)
		switch {
		case err == nil:
			w.log.Info("server answers", "server", w.cfg.Server.Address)
			return nil
		case ctx.Err() != nil:
			return nil
		case !errors.Is(err, client.ErrAuth):
			w.log.Warn("server not reachable at start; carrying on, submissions will retry", "server", w.cfg.Server.Address, "err", err)
			return nil
		case try >= startAuthTries:
			return fmt.Errorf("%s (at %s, %d times in a row: %w)", errHandshake, w.cfg.Server.Address, try, err)
		}
		w.log.Warn("server refused the handshake at start; trying again", "server", w.cfg.Server.Address,
			"err", err, "retry_seconds", delay.Seconds())
		if !sleep(ctx, delay) {
			return nil
		}
		delay = min(2*delay, w.cfg.RetryMax)
	}
}

func (w *Watcher) statusOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startCheckTimeout)
	defer cancel()
	c, err := client.Dial(ctx, w.cfg.Server)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Status(ctx)
	return err
}

// logRetry logs a step that failed and will be retried: a refused
// handshake (which will not pass by itself while the key or address is
// wrong) as an ERROR that says what to check, anything else as a WARN.
func (w *Watcher) logRetry(what string, err error, args []any) {
	if errors.Is(err, client.ErrAuth) {
		w.log.Error(what+" failed: "+errHandshake+"; retrying", args...)
		return
	}
	w.log.Warn(what+" failed; retrying", args...)
}
