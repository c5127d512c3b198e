package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/flynn/noise"
)

// Conn is an authenticated, encrypted byte stream over a net.Conn. It is
// returned by Client, Server and Dial only after the peer has proved the
// role's key, and it implements net.Conn.
//
// Read returns io.EOF only after the peer's authenticated close record (sent
// by its CloseWrite); a connection that ends without one is ErrTruncated. A
// record that fails to decrypt or is malformed is an error that sticks, and
// it closes the underlying connection. Timeouts do not stick: a Read that
// times out can be retried.
//
// Concurrency: one goroutine may Read while another Writes. Read is not safe
// for concurrent use by several goroutines, and neither are Write and
// CloseWrite. Close, the deadline setters, Role, LocalAddr and RemoteAddr are
// safe to call at any time, from any goroutine.
//
// Memory is constant per connection, and an idle connection holds almost
// none: a Write borrows a write buffer of about 256 KiB from a pool shared by
// all Conns and returns it before it returns, and a Read borrows a read
// buffer of about 512 KiB while received bytes are waiting in it (a record
// small enough is read into a 2 KiB buffer of the Conn's own). Read and
// Write do not allocate, except when the pools are empty.
//
// The Conn owns the underlying connection: Close closes it.
type Conn struct {
	conn    net.Conn
	role    Role
	idle    time.Duration
	keyID   KeyID
	keyName string
	old     bool

	dl deadlines

	r readState
	_ [64]byte // keep the two sides' hot fields on separate cache lines
	w writeState
}

var _ net.Conn = (*Conn)(nil)

// readState is owned by the reading goroutine.
type readState struct {
	cs       *noise.CipherState
	buf      []byte  // records as received; decrypted in place: small, *pooled or nil
	pooled   *[]byte // the buffer borrowed from readBuffers, or nil
	used     int     // high-water mark of buf, cleared before it goes back
	pos, end int     // buf[pos:end] is not yet consumed
	plain    []byte  // decrypted data not yet returned, inside buf
	err      error   // sticky: io.EOF after the close record, or a failure
	idleHit  bool    // the current read deadline is the idle timeout's
	small    [smallReadSize]byte
}

// writeState is owned by the writing goroutine.
type writeState struct {
	cs     *noise.CipherState
	buf    []byte  // sealed records not yet written; borrowed within Write
	pooled *[]byte // where buf came from
	err    error   // sticky
	closed bool
}

// The buffer pools shared by all Conns: a buffer is taken for a transfer
// and given back when it is empty, so memory follows the transfers in
// progress, not the connections open.
var (
	readBuffers  = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}
	writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, writeBufferSize); return &b }}
)

// deadlines combines the caller's read deadline with the idle timeout.
type deadlines struct {
	mu   sync.Mutex
	user time.Time // the caller's read deadline
	idle time.Time // the armed idle deadline, zero if none
}

func newConn(conn net.Conn, cfg *Config, send, recv *noise.CipherState) *Conn {
	return &Conn{
		conn: conn,
		role: cfg.Role,
		idle: cfg.IdleTimeout,
		r:    readState{cs: recv},
		w:    writeState{cs: send},
	}
}

// Role returns the role the connection was authenticated for.
func (c *Conn) Role() Role { return c.role }

// KeyID returns the id of the key the connection was authenticated with.
func (c *Conn) KeyID() KeyID { return c.keyID }

// KeyName returns, on a server side, the name the Keyring gave the key the
// client proved ("" with Config.Key alone, and on a client side).
func (c *Conn) KeyName() string { return c.keyName }

// OldProtocol reports, on a server side, that the client speaks protocol
// version 1: the connection is authenticated, and good only for telling
// the client to upgrade.
func (c *Conn) OldProtocol() bool { return c.old }

// LocalAddr returns the underlying connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the underlying connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the underlying
// connection, as net.Conn.SetDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.conn.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline of the underlying connection. With
// an idle timeout, the earlier of the two applies to each wait.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dl.mu.Lock()
	defer c.dl.mu.Unlock()
	c.dl.user = t
	if !c.dl.idle.IsZero() && (t.IsZero() || c.dl.idle.Before(t)) {
		t = c.dl.idle
	}
	return c.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline of the underlying connection. A
// Write that times out leaves the stream broken: its error sticks.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Close closes the underlying connection. It does not send a close record;
// call CloseWrite first for the peer to see a clean end of stream. Close is
// safe to call concurrently with Read and Write, which then fail.
func (c *Conn) Close() error { return c.conn.Close() }

// Read reads decrypted data from the peer. It returns io.EOF once the peer
// has closed its side with CloseWrite, and ErrTruncated if the connection ends
// before that. See Conn for which errors stick.
func (c *Conn) Read(p []byte) (int, error) {
	// A bulk reader (a file transfer) keeps its buffer between Reads; a
	// small one (control messages) gives it back when it is empty, also
	// before it waits.
	bulk := len(p) >= MaxPayload
	if !bulk {
		c.releaseReadBuffer()
	}
	defer func() {
		if !bulk || c.r.err != nil {
			c.releaseReadBuffer()
		}
	}()
	r := &c.r
	if len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		for len(r.plain) == 0 {
			if err := c.readRecord(); err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	// Fill the rest of p from records already received, without waiting.
	// A failure here sticks and is reported by the next Read.
	for n < len(p) && r.err == nil && c.recordBuffered() {
		if c.readRecord() != nil {
			break
		}
		m := copy(p[n:], r.plain)
		r.plain = r.plain[m:]
		n += m
	}
	return n, nil
}

// releaseReadBuffer gives the read buffer up when nothing in it is waiting
// to be returned (or the stream has failed), cleared of the plaintext it
// held; a pooled one goes back to the pool.
func (c *Conn) releaseReadBuffer() {
	r := &c.r
	if r.buf == nil || (r.err == nil && (r.pos < r.end || len(r.plain) > 0)) {
		return
	}
	clear(r.buf[:max(r.used, r.end)])
	if r.pooled != nil {
		readBuffers.Put(r.pooled)
	}
	r.buf, r.pooled, r.used, r.pos, r.end, r.plain = nil, nil, 0, 0, 0, nil
}

// recordBuffered reports whether a whole record (or a length that will be
// rejected) is in the buffer, so that readRecord will not wait.
func (c *Conn) recordBuffered() bool {
	r := &c.r
	have := r.end - r.pos
	if have < lengthSize {
		return false
	}
	n := int(binary.BigEndian.Uint16(r.buf[r.pos:]))
	return n < minRecordSize || n > MaxRecordSize || have >= lengthSize+n
}

// readRecord reads and decrypts the next record. For a data record it sets
// r.plain (possibly empty); for a close record it returns io.EOF.
func (c *Conn) readRecord() error {
	r := &c.r
	if err := c.fill(lengthSize); err != nil {
		return c.readFailed(err)
	}
	n := int(binary.BigEndian.Uint16(r.buf[r.pos:]))
	if n < minRecordSize || n > MaxRecordSize {
		return c.readFailed(fmt.Errorf("%w: length %d out of range [%d, %d]", ErrRecord, n, minRecordSize, MaxRecordSize))
	}
	if err := c.fill(lengthSize + n); err != nil {
		return c.readFailed(err)
	}
	ct := r.buf[r.pos+lengthSize : r.pos+lengthSize+n]
	r.pos += lengthSize + n
	pt, err := r.cs.Decrypt(ct[:0], nil, ct)
	if err != nil {
		return c.readFailed(ErrCorrupt)
	}
	switch pt[0] {
	case recordData:
		r.plain = pt[1:]
		return nil
	case recordClose:
		if len(pt) != 1 {
			return c.readFailed(fmt.Errorf("%w: close record with payload", ErrRecord))
		}
		r.err = io.EOF
		return io.EOF
	case recordHello:
		return c.readFailed(fmt.Errorf("%w: unexpected hello record", ErrRecord))
	default:
		return c.readFailed(fmt.Errorf("%w: unknown record type %d", ErrRecord, pt[0]))
	}
}

// readFailed turns err into the error Read returns. Timeouts are returned as
// they are (or as an idle timeout); anything else sticks and closes the
// connection, and the end of the connection is ErrTruncated.
func (c *Conn) readFailed(err error) error {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		if c.r.idleHit {
			return &idleTimeoutError{idle: c.idle, err: err}
		}
		return err
	}
	if errors.Is(err, io.EOF) {
		err = ErrTruncated
	}
	c.r.err = err
	c.r.plain = nil
	_ = c.conn.Close()
	return err
}

// fill reads until at least need bytes are buffered. The caller has
// consumed r.plain, so the buffer may be compacted.
func (c *Conn) fill(need int) error {
	r := &c.r
	if r.end-r.pos >= need {
		return nil
	}
	if r.buf == nil {
		// Nothing is buffered: wait for the peer in the small buffer, so an
		// idle connection holds no pooled one.
		r.buf = r.small[:]
	}
	for r.end-r.pos < need {
		switch {
		case r.pooled == nil && (need > len(r.buf) || r.end == len(r.buf)):
			// A record larger than the small buffer, or more data than
			// it holds: move to a pooled buffer.
			r.pooled = readBuffers.Get().(*[]byte)
			small := r.buf[:max(r.used, r.end)]
			r.end = copy(*r.pooled, r.buf[r.pos:r.end])
			clear(small)
			r.buf, r.pos, r.used = *r.pooled, 0, 0
		case len(r.buf)-r.pos < need || (r.pooled != nil && len(r.buf)-r.end < minReadSize) || r.end == len(r.buf):
			// Move the partial record to the front when the rest of it
			// does not fit, or when the free tail is too small for an
			// efficient read.
			r.used = max(r.used, r.end)
			r.end = copy(r.buf, r.buf[r.pos:r.end])
			r.pos = 0
		}
		if c.idle > 0 {
			if err := c.armIdle(); err != nil {
				return err
			}
		}
		n, err := c.conn.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			if r.end-r.pos >= need {
				return nil // the error will come again on the next read
			}
			return err
		}
	}
	return nil
}

// armIdle sets the read deadline for one wait: the idle timeout from now, or
// the caller's deadline if that is earlier.
func (c *Conn) armIdle() error {
	c.dl.mu.Lock()
	defer c.dl.mu.Unlock()
	d := time.Now().Add(c.idle)
	c.dl.idle = d
	c.r.idleHit = true
	if !c.dl.user.IsZero() && c.dl.user.Before(d) {
		d = c.dl.user
		c.r.idleHit = false
	}
	return c.conn.SetReadDeadline(d)
}

// idleTimeoutError is returned by a Read that waited longer than the idle
// timeout. It is a net.Error whose Timeout is true, and it wraps the
// underlying connection's error (os.ErrDeadlineExceeded).
type idleTimeoutError struct {
	idle time.Duration
	err  error
}

func (e *idleTimeoutError) Error() string {
	return fmt.Sprintf("secure: read: no data from peer for %v: %v", e.idle, e.err)
}
func (e *idleTimeoutError) Unwrap() error   { return e.err }
func (e *idleTimeoutError) Timeout() bool   { return true }
func (e *idleTimeoutError) Temporary() bool { return true }

// Write encrypts p and sends it as records of at most MaxPayload bytes,
// batching several records into one write on the underlying connection. A
// Write of nothing sends nothing. Any error sticks: a failed Write leaves the
// stream broken. Write is not safe for concurrent use by several goroutines.
func (c *Conn) Write(p []byte) (int, error) {
	w := &c.w
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.borrowWriteBuffer()
	defer c.returnWriteBuffer()
	written, pending := 0, 0
	for len(p) > 0 {
		n := min(len(p), MaxPayload)
		if cap(w.buf)-len(w.buf) < lengthSize+recordOverhead+n {
			if err := c.flush(); err != nil {
				return written, err
			}
			written, pending = written+pending, 0
		}
		if err := c.seal(recordData, p[:n]); err != nil {
			return written, err
		}
		p = p[n:]
		pending += n
	}
	if err := c.flush(); err != nil {
		return written, err
	}
	return written + pending, nil
}

// CloseWrite sends the close record, after which the peer's Read returns
// io.EOF, and half-closes the underlying connection if it supports that (as
// TCP does). Reading is still possible. Later Writes fail with
// ErrWriteClosed; a second CloseWrite does nothing. CloseWrite must not be
// called concurrently with Write.
func (c *Conn) CloseWrite() error {
	w := &c.w
	if w.closed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	c.borrowWriteBuffer()
	err := c.seal(recordClose, nil)
	if err == nil {
		err = c.flush()
	}
	c.returnWriteBuffer()
	if err != nil {
		return err
	}
	w.closed, w.err = true, ErrWriteClosed
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *Conn) borrowWriteBuffer() {
	w := &c.w
	w.pooled = writeBuffers.Get().(*[]byte)
	w.buf = (*w.pooled)[:0]
}

// returnWriteBuffer gives the write buffer back. It holds only sealed
// records, unless sealing failed.
func (c *Conn) returnWriteBuffer() {
	w := &c.w
	if w.err != nil {
		clear(w.buf[:cap(w.buf)])
	}
	*w.pooled = w.buf[:0]
	writeBuffers.Put(w.pooled)
	w.buf, w.pooled = nil, nil
}

func (c *Conn) seal(typ byte, payload []byte) error {
	w := &c.w
	buf, err := appendRecord(w.buf, w.cs, typ, payload)
	if err != nil {
		w.err = fmt.Errorf("secure: seal record: %w", err)
		return w.err
	}
	w.buf = buf
	return nil
}

func (c *Conn) flush() error {
	w := &c.w
	if len(w.buf) == 0 {
		return nil
	}
	_, err := c.conn.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// appendRecord appends to dst one record of type typ carrying payload,
// sealed with cs: length prefix, then the ciphertext of typ||payload. It does
// not allocate when dst has room.
func appendRecord(dst []byte, cs *noise.CipherState, typ byte, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("record payload of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	o := len(dst)
	dst = slices.Grow(dst, lengthSize+recordOverhead+len(payload))[:o+lengthSize+1+len(payload)]
	pt := dst[o+lengthSize:]
	pt[0] = typ
	copy(pt[1:], payload)
	// Seal in place: the plaintext's storage receives the ciphertext.
	return appendSealed(dst[:o], cs, pt)
}

// appendSealed appends to dst one record whose plaintext pt is the type
// byte and the payload: length prefix, then the ciphertext of pt. pt is
// either exactly where the ciphertext goes (sealing in place) or does not
// overlap dst's free capacity at all. It does not allocate when dst has
// room.
func appendSealed(dst []byte, cs *noise.CipherState, pt []byte) ([]byte, error) {
	if len(pt) < 1 || len(pt) > 1+MaxPayload {
		return dst, fmt.Errorf("record plaintext of %d bytes is not within [1, %d]", len(pt), 1+MaxPayload)
	}
	o := len(dst)
	n := len(pt) + tagSize
	dst = slices.Grow(dst, lengthSize+n)[:o+lengthSize]
	binary.BigEndian.PutUint16(dst[o:], uint16(n))
	ct, err := cs.Encrypt(dst[o+lengthSize:o+lengthSize], nil, pt)
	if err != nil {
		return dst[:o], err
	}
	return dst[:o+lengthSize+len(ct)], nil
}
