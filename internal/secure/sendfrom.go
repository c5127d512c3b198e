package secure

import (
	"errors"
	"fmt"
	"hash"
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
// When h is not nil, SendFrom feeds it the bytes it sends, as the sender
// of a file hashes it. For more than one batch (256 KiB), the hashing runs
// in a goroutine of its own, one batch ahead of the sealing, over a second
// write buffer: a second core then hashes while this one reads, seals and
// sends. SendFrom returns only after that goroutine has ended.
//
// It returns the number of bytes sent. An r that ends before n bytes is
// an error wrapping io.ErrUnexpectedEOF, and an error of r is returned as
// it is; in both cases what was read has been sent (and hashed), and the
// stream stays usable. A failure to send sticks, as with Write. SendFrom
// is not safe for concurrent use with Write, CloseWrite or another
// SendFrom. It does not allocate per record; hashing more than a batch
// allocates a few times per call.
func (c *Conn) SendFrom(r io.Reader, n int64, h hash.Hash) (int64, error) {
	w := &c.w
	if w.err != nil {
		return 0, w.err
	}
	if n <= 0 {
		return 0, nil
	}
	c.borrowWriteBuffer()
	defer c.returnWriteBuffer()
	if h != nil && n > batchRecords*MaxPayload {
		return c.sendHashing(r, n, h)
	}
	var (
		sent int64
		b    sendBatch
	)
	for sent < n {
		b.fill(w.buf, r, n-sent)
		if h != nil {
			b.hash(h)
		}
		m, err := c.sendBatch(&b, n, sent)
		sent += m
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// sendBatch is a batch of records laid out in a write buffer: record i at
// i*maxFrameSize, its plaintext (the type byte, then the payload read
// into slots[i]) where its ciphertext goes, after the length prefix and
// with room for the tag.
type sendBatch struct {
	buf   []byte
	slots [batchRecords][]byte
	k     int   // slots laid out
	m     int   // bytes read into them, in order
	err   error // of the read
}

// fill lays out a batch of up to left bytes in buf and reads it from r.
func (b *sendBatch) fill(buf []byte, r io.Reader, left int64) {
	b.buf, b.k = buf, 0
	for ; b.k < batchRecords && left > 0; b.k++ {
		p := int(min(int64(MaxPayload), left))
		at := b.k*maxFrameSize + lengthSize + 1
		b.slots[b.k] = buf[at : at+p]
		left -= int64(p)
	}
	b.m, b.err = readRecords(r, b.slots[:b.k])
}

// hash feeds h the bytes read.
func (b *sendBatch) hash(h hash.Hash) {
	for i, m := 0, b.m; m > 0; i++ {
		p := min(m, len(b.slots[i]))
		h.Write(b.slots[i][:p])
		m -= p
	}
}

// sendBatch seals the records of b in place and sends them. It returns the
// bytes sent and the error that ends SendFrom: the send's, or the read's
// (sent counts what was sent before b).
func (c *Conn) sendBatch(b *sendBatch, n, sent int64) (int64, error) {
	w := &c.w
	w.buf = b.buf[:0]
	var done int64
	// The reads fill the slots in order, so only the last record read may
	// be short and the records stay packed.
	for i, m := 0, b.m; m > 0; i++ {
		p := min(m, len(b.slots[i]))
		at := i*maxFrameSize + lengthSize
		pt := b.buf[at : at+1+p]
		pt[0] = recordData
		buf, err := appendSealed(b.buf[:i*maxFrameSize], w.cs, pt)
		if err != nil {
			clear(b.buf[:cap(b.buf)])
			w.err = fmt.Errorf("secure: seal record: %w", err)
			return done, w.err
		}
		w.buf = buf
		m -= p
		done += int64(p)
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	if rerr := b.err; rerr != nil {
		if errors.Is(rerr, io.EOF) {
			rerr = io.ErrUnexpectedEOF
		}
		if errors.Is(rerr, io.ErrUnexpectedEOF) {
			return done, fmt.Errorf("secure: send: source ended after %d of %d bytes: %w", sent+done, n, rerr)
		}
		return done, rerr
	}
	return done, nil
}

// sendBatches is how many batches sendHashing reads ahead of the one it
// seals and sends: the Conn's write buffer and sendBatches-1 more.
const sendBatches = 4

// sendHashing is SendFrom with h hashing batches in a goroutine while the
// batch before them is sealed and sent: up to sendBatches batches are read
// ahead, in the Conn's write buffer and more from the pool.
func (c *Conn) sendHashing(r io.Reader, n int64, h hash.Hash) (int64, error) {
	w := &c.w
	var (
		pooled  [sendBatches]*[]byte
		batches [sendBatches]sendBatch
		bufs    [sendBatches][]byte
	)
	bufs[0] = w.buf[:cap(w.buf)]
	for i := 1; i < sendBatches; i++ {
		pooled[i] = writeBuffers.Get().(*[]byte)
		bufs[i] = (*pooled[i])[:cap(*pooled[i])]
	}
	toHash := make(chan *sendBatch, sendBatches)
	hashed := make(chan struct{}, sendBatches)
	go func() {
		for b := range toHash {
			b.hash(h)
			hashed <- struct{}{}
		}
		close(hashed)
	}()
	defer func() {
		close(toHash)
		for range hashed {
		}
		for i := 1; i < sendBatches; i++ {
			if w.err != nil {
				clear(bufs[i])
			}
			*pooled[i] = (*pooled[i])[:0]
			writeBuffers.Put(pooled[i])
		}
		// The Conn's buffer goes back by returnWriteBuffer.
		w.buf = bufs[0][:0]
	}()
	var (
		sent, read int64
		head, k    int // batches[head] is the oldest of the k read and not sent
		readEnded  bool
	)
	for {
		// Read ahead while there is room, each batch to the hash.
		for k < sendBatches && !readEnded && read < n {
			i := (head + k) % sendBatches
			b := &batches[i]
			b.fill(bufs[i], r, n-read)
			read += int64(b.m)
			readEnded = b.err != nil
			toHash <- b
			k++
		}
		if k == 0 {
			return sent, nil
		}
		<-hashed // the oldest batch's: the hash takes them in order
		m, err := c.sendBatch(&batches[head], n, sent)
		sent += m
		head, k = (head+1)%sendBatches, k-1
		if err != nil {
			return sent, err
		}
	}
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
