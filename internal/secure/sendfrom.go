package secure

import (
	"errors"
	"fmt"
	"io"
)

// batchRecords is the most records SendFrom fills with one read: as many
// full records as the write buffer holds.
const batchRecords = writeBufferSize / maxFrameSize

// SendFrom sends exactly n bytes read from r as data records, as Write
// would, but reads them straight into the write buffer, where each record
// is sealed in place: the data is copied once fewer than by Write (from
// r's buffer into the record). From an *os.File on Linux, one readv system
// call fills a whole batch of records. It is meant for sending a file,
// which yields all that is asked at every read; a reader that returns
// little at a time (a network connection) gets its records filled by
// io.ReadFull, so its data waits until a batch is full or n is reached.
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
	var (
		sent  int64
		slots [batchRecords][]byte
	)
	for sent < n {
		// Lay out a batch in the empty write buffer: record i at
		// i*maxFrameSize, its plaintext (the type byte, then the payload
		// read from r) where its ciphertext goes, after the length prefix
		// and with room for the tag.
		k, left := 0, n-sent
		for ; k < batchRecords && left > 0; k++ {
			p := int(min(int64(MaxPayload), left))
			at := k*maxFrameSize + lengthSize + 1
			slots[k] = w.buf[at : at+p]
			left -= int64(p)
		}
		m, rerr := readRecords(r, slots[:k])
		start := sent
		// Seal what was read. The reads fill the slots in order, so only
		// the last record read may be short and the records stay packed.
		for i := 0; m > 0; i++ {
			p := min(m, len(slots[i]))
			at := i*maxFrameSize + lengthSize
			pt := w.buf[at : at+1+p]
			pt[0] = recordData
			buf, err := appendSealed(w.buf[:i*maxFrameSize], w.cs, pt)
			if err != nil {
				clear(w.buf[:cap(w.buf)])
				w.err = fmt.Errorf("secure: seal record: %w", err)
				return sent, w.err
			}
			w.buf = buf
			m -= p
			sent += int64(p)
		}
		if err := c.flush(); err != nil {
			return start, err
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			if errors.Is(rerr, io.ErrUnexpectedEOF) {
				return sent, fmt.Errorf("secure: send: source ended after %d of %d bytes: %w", sent, n, rerr)
			}
			return sent, rerr
		}
	}
	return sent, nil
}

// readFullSlots fills slots in order with io.ReadFull and returns the
// number of bytes read: all of them unless r ended or failed.
func readFullSlots(r io.Reader, slots [][]byte) (int, error) {
	total := 0
	for _, s := range slots {
		m, err := io.ReadFull(r, s)
		total += m
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
