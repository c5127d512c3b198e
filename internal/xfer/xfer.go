// Package xfer copies file data between disk and the network in a
// pipeline: reading, hashing and writing run in their own goroutines over a
// small fixed set of buffers, so a transfer uses every core the crypto,
// the hash and the system calls can keep busy, in constant memory.
package xfer

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
)

// Sizes of the pipeline: buffers of BufferSize bytes, at most Buffers of
// them in flight per transfer (2 MiB in all), and no more than the
// transfer fills.
const (
	BufferSize = 256 << 10
	Buffers    = 8
)

// chunks holds the buffers of finished transfers for the next ones, so
// that a server taking many uploads reuses memory instead of allocating
// 2 MiB for each.
var chunks = sync.Pool{New: func() any { return &chunk{b: make([]byte, BufferSize)} }}

// ErrShort is returned when src ends before n bytes.
var ErrShort = errors.New("stream ended early")

type chunk struct {
	b    []byte
	n    int
	refs sync.WaitGroup
}

// Copy copies exactly n bytes from src to dst and, when h is not nil,
// feeds the same bytes to h. Reading (this goroutine), writing and hashing
// (one goroutine each) overlap. It returns the number of bytes written; a
// src that ends early gives an error wrapping ErrShort and
// io.ErrUnexpectedEOF. On error, some of the bytes read may not have been
// written or hashed. Copy returns only after its goroutines have ended.
func Copy(dst io.Writer, src io.Reader, n int64, h hash.Hash) (int64, error) {
	if n <= BufferSize {
		// Small copies are not worth the goroutines.
		return copySmall(dst, src, n, h)
	}
	nbuf := int(min(Buffers, (n+BufferSize-1)/BufferSize))
	free := make(chan *chunk, nbuf)
	for range nbuf {
		free <- chunks.Get().(*chunk)
	}
	// Every chunk is back in free once the stages have ended.
	defer func() {
		for range nbuf {
			chunks.Put(<-free)
		}
	}()
	toWrite := make(chan *chunk, nbuf)
	toHash := make(chan *chunk, nbuf)
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		written  int64
		writeErr error
	)
	release := func(c *chunk) {
		c.refs.Done()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for c := range toWrite {
			if writeErr == nil {
				var m int
				m, writeErr = dst.Write(c.b[:c.n])
				written += int64(m)
				if writeErr == nil && m != c.n {
					writeErr = io.ErrShortWrite
				}
				if writeErr != nil {
					close(stop)
				}
			}
			release(c)
		}
	}()
	if h != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range toHash {
				h.Write(c.b[:c.n])
				release(c)
			}
		}()
	}
	// recycle returns a chunk to the free list once its stages are done.
	recycle := make(chan *chunk, nbuf)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for c := range recycle {
			c.refs.Wait()
			free <- c
		}
	}()

	var readErr error
	remaining := n
loop:
	for remaining > 0 {
		select {
		case <-stop:
			break loop
		default:
		}
		var c *chunk
		select {
		case c = <-free:
		case <-stop:
			break loop
		}
		want := int(min(int64(len(c.b)), remaining))
		m, err := io.ReadFull(src, c.b[:want])
		if m > 0 {
			c.n = m
			stages := 1
			if h != nil {
				stages = 2
			}
			c.refs.Add(stages)
			toWrite <- c
			if h != nil {
				toHash <- c
			}
			recycle <- c
			remaining -= int64(m)
		} else {
			free <- c
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w after %d of %d bytes: %w", ErrShort, n-remaining, n, io.ErrUnexpectedEOF)
			}
			readErr = err
			break
		}
	}
	close(toWrite)
	close(toHash)
	wg.Wait()
	close(recycle)
	rwg.Wait()
	if writeErr != nil {
		return written, writeErr
	}
	return written, readErr
}

func copySmall(dst io.Writer, src io.Reader, n int64, h hash.Hash) (int64, error) {
	c := chunks.Get().(*chunk)
	defer chunks.Put(c)
	buf := c.b[:n]
	m, err := io.ReadFull(src, buf)
	if h != nil {
		h.Write(buf[:m])
	}
	w, werr := dst.Write(buf[:m])
	if werr != nil {
		return int64(w), werr
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w after %d of %d bytes: %w", ErrShort, m, n, io.ErrUnexpectedEOF)
		}
		return int64(w), err
	}
	return int64(w), nil
}
