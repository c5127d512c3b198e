package secure

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Forwarding tunes [Forward].
type Forwarding struct {
	// WriteTimeout, if positive, is the write deadline each write to dst
	// gets, counted from its start: a destination that stops reading
	// cannot hold a transfer for ever.
	WriteTimeout time.Duration
	// Progress, if not nil, is called after each write to dst with the
	// number of data bytes it carried.
	Progress func(n int)
}

// Forward moves exactly n bytes of data from src's stream into dst's, as
// an io.CopyN from src to dst would, for a party that relays between two
// secure connections. It tells the two sides' errors apart: readErr is
// src's (io.ErrUnexpectedEOF if its stream ends early), writeErr is dst's.
// What src delivered before it failed has been written to dst.
//
// Each record of src is opened in src's read buffer and its plaintext is
// sealed for dst straight from there, so no byte is copied between the two
// ciphers: one decryption, one encryption and the two sockets' copies are
// all the work per byte. Records written to dst are batched as by Write,
// and dst is flushed before Forward waits for src, so nothing waits in the
// relay for more data to arrive.
//
// Forward reads src as Read does (idle timeout and deadlines included) and
// writes dst as Write does; it must not run concurrently with src's Read
// or dst's Write and CloseWrite. It does not allocate, except when the
// buffer pools are empty.
func Forward(dst, src *Conn, n int64, f Forwarding) (readErr, writeErr error) {
	if n <= 0 {
		return nil, nil
	}
	w := &dst.w
	if w.err != nil {
		return nil, w.err
	}
	r := &src.r
	dst.borrowWriteBuffer()
	defer dst.returnWriteBuffer()
	defer src.releaseReadBuffer()
	pending := 0
	flush := func() error {
		if len(w.buf) == 0 {
			return nil
		}
		if f.WriteTimeout > 0 {
			if err := dst.conn.SetWriteDeadline(time.Now().Add(f.WriteTimeout)); err != nil {
				w.err = err
				return err
			}
		}
		if err := dst.flush(); err != nil {
			return err
		}
		if f.Progress != nil {
			f.Progress(pending)
		}
		pending = 0
		return nil
	}
	for n > 0 {
		if len(r.plain) == 0 {
			if r.err == nil && !src.recordBuffered() {
				// About to wait for src: send what is sealed first.
				if err := flush(); err != nil {
					return nil, err
				}
			}
			err := r.err
			if err == nil {
				err = src.readRecord()
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				if werr := flush(); werr != nil {
					return nil, werr
				}
				return err, nil
			}
			continue
		}
		k := min(len(r.plain), MaxPayload)
		if int64(k) > n {
			k = int(n)
		}
		if cap(w.buf)-len(w.buf) < lengthSize+recordOverhead+k {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		// The byte before the plaintext in src's buffer is its record's
		// type byte or plaintext already consumed: either way it is free
		// to carry the type byte of the record sealed for dst.
		i := cap(r.buf) - cap(r.plain)
		pt := r.buf[i-1 : i+k]
		pt[0] = recordData
		buf, err := appendSealed(w.buf, w.cs, pt)
		if err != nil {
			w.err = fmt.Errorf("secure: seal record: %w", err)
			return nil, w.err
		}
		w.buf = buf
		r.plain = r.plain[k:]
		n -= int64(k)
		pending += k
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return nil, nil
}
