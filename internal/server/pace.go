package server

import (
	"os"
	"time"

	"github.com/recon-mri/recon/internal/secure"
)

// MinTransferRate is the slowest a peer may send or take file data, in
// bytes per second, averaged over any stretch longer than the idle timeout.
// A peer that trickles a byte now and then (each within the idle timeout)
// cannot hold a session, and for an upload its disk reservation, for ever.
const MinTransferRate = 1 << 10

// pacer is a deadline that moves forward with every byte transferred, by
// 1/MinTransferRate s a byte, and is never more than grace ahead of now:
// a transfer fails once it has been slower than MinTransferRate for about
// grace. It starts grace from now.
type pacer struct {
	grace time.Duration
	dl    time.Time
}

func newPacer(grace time.Duration) *pacer {
	return &pacer{grace: grace, dl: time.Now().Add(grace)}
}

// restart gives the transfer grace from now again (after the server spent
// time of its own, such as reading back a kept part).
func (p *pacer) restart() { p.dl = time.Now().Add(p.grace) }

// credit moves the deadline forward for n bytes transferred.
func (p *pacer) credit(n int) {
	p.dl = p.dl.Add(time.Duration(n) * time.Second / MinTransferRate)
	if lim := time.Now().Add(p.grace); p.dl.After(lim) {
		p.dl = lim
	}
}

// pacedReader reads from c under the pacer's deadline. The idle timeout
// still applies to each wait.
type pacedReader struct {
	c *secure.Conn
	p *pacer
}

func (r *pacedReader) Read(b []byte) (int, error) {
	r.c.SetReadDeadline(r.p.dl)
	n, err := r.c.Read(b)
	r.p.credit(n)
	return n, err
}

// pacedWriter writes to c under the pacer's deadline.
type pacedWriter struct {
	c *secure.Conn
	p *pacer
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	// The bytes of this write count before it starts: a large write must
	// not fail only because it is large.
	w.p.credit(len(b))
	w.c.SetWriteDeadline(w.p.dl)
	return w.c.Write(b)
}

// sendStep is how much of a file pacedWriter.SendFrom sends per deadline.
const sendStep = 256 << 10

// SendFrom sends exactly n bytes of f under the pacer's deadline, read
// straight into the connection's records (secure.Conn.SendFrom: one copy
// of the data fewer than Write, and from a file one readv per batch of
// records). As in Write, the bytes of each step count before it starts.
func (w *pacedWriter) SendFrom(f *os.File, n int64) (int64, error) {
	var sent int64
	for sent < n {
		k := min(n-sent, sendStep)
		w.p.credit(int(k))
		w.c.SetWriteDeadline(w.p.dl)
		m, err := w.c.SendFrom(f, k)
		sent += m
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}
