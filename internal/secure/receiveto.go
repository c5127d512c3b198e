package secure

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
)

// Sizes of ReceiveTo's pipeline: at most receiveBatches read buffers of
// opened records are waiting for the writer and the hash besides the one
// being read into (2.5 MiB in all, as xfer.Copy's buffers and a Conn's read
// buffer together), and a transfer of at most receiveSerial bytes runs in
// the calling goroutine alone.
const (
	receiveBatches = 4
	receiveSerial  = 256 << 10
)

// recvBatch is a read buffer of opened records handed to ReceiveTo's writer
// and hash goroutines.
type recvBatch struct {
	pooled *[]byte // the read buffer (from readBuffers)
	used   int     // high-water mark of its plaintext, cleared before it goes back
	data   []byte  // the batch's payloads, contiguous, inside *pooled
	refs   sync.WaitGroup
}

// ReceiveTo receives exactly n bytes of data, as io.ReadFull on the Conn
// would, and writes them to w; when h is not nil it feeds h the same
// bytes. Each record is opened in place in the Conn's read buffer and the
// payloads of the records received together are moved next to each other
// there and written with one Write: the data is not copied out of the read
// buffer into a buffer of the caller's.
//
// For more than 256 KiB, writing to w and hashing run in goroutines of
// their own while the next records are read and opened, on up to four
// read buffers handed between them (a second core then works on the same
// transfer); ReceiveTo returns only after they have ended.
//
// received, if not nil, is called in the calling goroutine with the number
// of bytes of each batch of records opened, before ReceiveTo waits for the
// next: it may set the Conn's read deadline, as a caller of Read would
// between Reads.
//
// ReceiveTo reads as Read does (deadlines, idle timeout and sticky errors
// included); a stream that ends (its close record) before n bytes gives an
// error wrapping io.ErrUnexpectedEOF. It returns the number of bytes
// written. On an error of the stream, what was received before it has
// been written and hashed; on an error of w, ReceiveTo stops reading and
// returns that error as it is. ReceiveTo is not safe for concurrent use
// with Read. It does not allocate per record; the pipeline allocates a
// few times per call.
func (c *Conn) ReceiveTo(w io.Writer, n int64, h hash.Hash, received func(int)) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	if n <= receiveSerial {
		p := recvPipe{c: c, w: w, h: h, n: n} // on the stack: no goroutine sees it
		return p.receive(received)
	}
	p := &recvPipe{c: c, w: w, h: h, n: n}
	p.start()
	return p.receive(received)
}

func (p *recvPipe) receive(received func(int)) (int64, error) {
	readErr := p.run(received)
	written, writeErr := p.finish()
	p.c.releaseReadBuffer()
	if writeErr != nil {
		return written, writeErr
	}
	return written, readErr
}

// recvPipe is one ReceiveTo.
type recvPipe struct {
	c *Conn
	w io.Writer
	h hash.Hash
	n int64

	// The pipeline, when started: batch s goes to ring[s%receiveBatches].
	ring     *[receiveBatches]recvBatch
	seq      int
	toWrite  chan *recvBatch
	toHash   chan *recvBatch
	stop     chan struct{} // closed when w fails
	wg       *sync.WaitGroup
	written  int64 // owned by the writer goroutine until finish
	writeErr error // likewise
}

func (p *recvPipe) start() {
	p.ring = new([receiveBatches]recvBatch)
	p.wg = new(sync.WaitGroup)
	p.toWrite = make(chan *recvBatch, receiveBatches)
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for b := range p.toWrite {
			p.write(b.data)
			b.refs.Done()
		}
	}()
	if p.h != nil {
		p.toHash = make(chan *recvBatch, receiveBatches)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for b := range p.toHash {
				p.h.Write(b.data)
				b.refs.Done()
			}
		}()
	}
}

// write writes data to w unless w has failed. It runs in the writer
// goroutine, or in ReceiveTo's once the batches in flight are drained.
func (p *recvPipe) write(data []byte) {
	if p.writeErr != nil {
		return
	}
	m, err := p.w.Write(data)
	p.written += int64(m)
	if err == nil && m != len(data) {
		err = io.ErrShortWrite
	}
	if err != nil {
		p.writeErr = err
		if p.ring != nil {
			close(p.stop) // once: write does nothing after an error
		}
	}
}

// failed reports whether the writer has failed.
func (p *recvPipe) failed() bool {
	if p.ring == nil {
		return p.writeErr != nil
	}
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// run reads and opens records until n bytes are taken or the stream or w
// fails, and hands each batch on. It returns the stream's error.
func (p *recvPipe) run(received func(int)) error {
	c, r := p.c, &p.c.r
	var got int64
	for got < p.n {
		if p.failed() {
			return nil
		}
		// The first record of a batch, waiting for it if need be.
		for len(r.plain) == 0 {
			err := r.err
			if err == nil {
				err = c.readRecord()
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("secure: receive: stream ended after %d of %d bytes: %w", got, p.n, io.ErrUnexpectedEOF)
				}
				return err
			}
		}
		// Take the payloads of every record received with it, moved down
		// next to each other: what lies between them (length prefixes,
		// type bytes, tags) has been consumed.
		start := cap(r.buf) - cap(r.plain)
		end := start
		var readErr error
		for {
			k := int(min(int64(len(r.plain)), p.n-got))
			if at := cap(r.buf) - cap(r.plain); at != end {
				copy(r.buf[end:], r.plain[:k])
			}
			end += k
			r.plain = r.plain[k:]
			got += int64(k)
			if got == p.n || len(r.plain) > 0 || r.err != nil || !c.recordBuffered() {
				break
			}
			if err := c.readRecord(); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("secure: receive: stream ended after %d of %d bytes: %w", got, p.n, io.ErrUnexpectedEOF)
				}
				readErr = err
				break
			}
		}
		if received != nil && end > start {
			received(end - start)
		}
		p.deliver(start, end)
		if readErr != nil {
			return readErr
		}
	}
	return nil
}

// deliver writes and hashes r.buf[start:end]: in this goroutine, or by
// handing the read buffer to the pipeline and reading on in another one.
func (p *recvPipe) deliver(start, end int) {
	r := &p.c.r
	if start == end {
		return
	}
	data := r.buf[start:end]
	if p.ring == nil || r.pooled == nil || len(r.plain) > 0 || r.err != nil {
		// Serial: a small transfer, records in the small buffer, or
		// plaintext (or a failure) that stays with the Conn. The bytes
		// go after those of the batches in flight.
		p.drain()
		p.write(data)
		if p.h != nil {
			p.h.Write(data)
		}
		return
	}
	b := &p.ring[p.seq%receiveBatches]
	next := b.pooled
	used := 0
	if next != nil {
		b.refs.Wait() // the oldest batch, done with before its buffer is reused
		used = b.used
	} else {
		next = readBuffers.Get().(*[]byte)
	}
	p.seq++
	// The batch keeps the read buffer; the Conn reads on in the next one,
	// where the partial record received after the batch moves.
	b.pooled, b.used, b.data = r.pooled, max(r.used, r.end), data
	rest := copy(*next, r.buf[r.pos:r.end])
	r.buf, r.pooled, r.pos, r.end, r.used = *next, next, 0, rest, max(used, rest)
	stages := 1
	if p.h != nil {
		stages = 2
	}
	b.refs.Add(stages)
	p.toWrite <- b
	if p.h != nil {
		p.toHash <- b
	}
}

// drain waits until the batches in flight are written and hashed.
func (p *recvPipe) drain() {
	if p.ring == nil {
		return
	}
	for i := range p.ring {
		p.ring[i].refs.Wait()
	}
}

// finish ends the pipeline and gives its read buffers back, cleared of
// the plaintext they held, and returns what the writer wrote and its error.
func (p *recvPipe) finish() (int64, error) {
	if p.ring != nil {
		close(p.toWrite)
		if p.toHash != nil {
			close(p.toHash)
		}
		p.wg.Wait()
		for i := range p.ring {
			b := &p.ring[i]
			if b.pooled != nil {
				clear((*b.pooled)[:b.used])
				readBuffers.Put(b.pooled)
				b.pooled, b.data = nil, nil
			}
		}
	}
	return p.written, p.writeErr
}
