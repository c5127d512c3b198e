package secure

import (
	"errors"
	"fmt"
	"io"
)

// SendFrom sends exactly n bytes read from r as data records, as Write
// would, but reads them straight into the write buffer, where each record
// is sealed in place: the data is copied once fewer than by Write (from
// r's buffer into the record). It is meant for sending a file, which
// yields whole records at every read; a reader that returns little at a
// time (a network connection) gets records filled by io.ReadFull, so its
// data waits until a record is full or n is reached.
//
// It returns the number of bytes sent. An r that ends before n bytes is
// an error wrapping io.ErrUnexpectedEOF, and an error of r is returned as
// it is; in both cases what was read has been sent, and the stream stays
// usable. A failure to send sticks, as with Write. SendFrom is not safe
// for concurrent use with Write, CloseWrite or another SendFrom.
func (c *Conn) SendFrom(r io.Reader, n int64) (int64, error) {
	w := &c.w
	if w.err != nil {
		return 0, w.err
	}
	if n <= 0 {
		return 0, nil
	}
	c.borrowWriteBuffer()
	defer c.returnWriteBuffer()
	var sent, pending int64
	for n-sent-pending > 0 {
		if cap(w.buf)-len(w.buf) < lengthSize+recordOverhead+MaxPayload {
			if err := c.flush(); err != nil {
				return sent, err
			}
			sent, pending = sent+pending, 0
		}
		o := len(w.buf)
		want := int(min(int64(MaxPayload), n-sent-pending))
		// The record's plaintext (type byte, then the payload read from r)
		// sits where its ciphertext goes.
		pt := w.buf[o+lengthSize : o+lengthSize+1+want]
		m, rerr := io.ReadFull(r, pt[1:])
		if m > 0 {
			pt[0] = recordData
			buf, err := appendSealed(w.buf, w.cs, pt[:1+m])
			if err != nil {
				clear(pt)
				w.err = fmt.Errorf("secure: seal record: %w", err)
				return sent, w.err
			}
			w.buf = buf
			pending += int64(m)
		}
		if rerr != nil {
			if err := c.flush(); err != nil {
				return sent, err
			}
			sent += pending
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			if errors.Is(rerr, io.ErrUnexpectedEOF) {
				return sent, fmt.Errorf("secure: send: source ended after %d of %d bytes: %w", sent, n, rerr)
			}
			return sent, rerr
		}
	}
	if err := c.flush(); err != nil {
		return sent, err
	}
	return sent + pending, nil
}
