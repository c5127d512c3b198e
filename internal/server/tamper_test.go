package server_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/server"
	"github.com/recon-mri/recon/internal/servertest"
)

// What the tampering proxy does to one direction of one connection.
type tamperOp int

const (
	opNone     tamperOp = iota
	opFlip              // flip one bit of the byte at off
	opTruncate          // end the stream (both connections) at off
	opDrop              // leave out frame
	opDup               // send frame twice
	opSwap              // send frame+1 before frame
)

func (o tamperOp) String() string {
	return [...]string{"none", "flip", "truncate", "drop", "duplicate", "swap"}[o]
}

const (
	c2s = 0 // client to server
	s2c = 1 // server to client
)

// tamper is one alteration of a session.
type tamper struct {
	dir   int
	op    tamperOp
	off   int   // byte offset in the direction's stream (flip, truncate)
	bit   uint8 // flip
	frame int   // frame index (drop, duplicate, swap)
}

func (tm tamper) String() string {
	d := "c2s"
	if tm.dir == s2c {
		d = "s2c"
	}
	switch tm.op {
	case opFlip:
		return fmt.Sprintf("%s %s bit %d of byte %d", d, tm.op, tm.bit, tm.off)
	case opTruncate:
		return fmt.Sprintf("%s %s at byte %d", d, tm.op, tm.off)
	}
	return fmt.Sprintf("%s %s frame %d", d, tm.op, tm.frame)
}

// A frame is a unit of the channel's wire format: the client's preamble
// (secure.PreambleSize bytes, its key id last), then (both ways) 2-byte big-endian lengths and their bytes -
// the two handshake messages, then the records.
type frame struct {
	off int // in the direction's stream
	b   []byte
}

// flow is what the proxy saw and did in one direction.
type flow struct {
	frames  []int // frame sizes
	total   int
	applied bool // the tamper took effect
}

// tamperProxy accepts connections on a loopback port and forwards each to
// target, applying the tamper that was current when it was accepted.
type tamperProxy struct {
	ln     net.Listener
	target string
	tm     chan tamper
	done   chan [2]flow
}

func startTamperProxy(t *testing.T, target string) *tamperProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperProxy{ln: ln, target: target, tm: make(chan tamper, 1), done: make(chan [2]flow, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tm := <-p.tm
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.done <- p.serve(c, tm)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return p
}

// session runs fn (which must dial the proxy once) with tm applied, and
// returns what the proxy saw once both directions have ended.
func (p *tamperProxy) session(t *testing.T, tm tamper, fn func(addr string)) [2]flow {
	t.Helper()
	p.tm <- tm
	fn(p.ln.Addr().String())
	select {
	case f := <-p.done:
		return f
	case <-time.After(20 * time.Second):
		t.Fatalf("%v: the proxied connection did not end", tm)
		return [2]flow{}
	}
}

func (p *tamperProxy) serve(cl net.Conn, tm tamper) [2]flow {
	defer cl.Close()
	srv, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return [2]flow{}
	}
	defer srv.Close()
	var flows [2]flow
	var wg sync.WaitGroup
	wg.Add(2)
	cut := func() { cl.Close(); srv.Close() }
	go func() {
		defer wg.Done()
		forward(srv, cl, true, tm, c2s, &flows[c2s], cut)
	}()
	go func() {
		defer wg.Done()
		forward(cl, srv, false, tm, s2c, &flows[s2c], cut)
	}()
	wg.Wait()
	return flows
}

// forward copies src to dst frame by frame, applying tm if it is for dir.
func forward(dst, src net.Conn, preamble bool, tm tamper, dir int, f *flow, cut func()) {
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	r := bufio.NewReader(src)
	off := 0
	read := func() (*frame, error) {
		var b []byte
		if preamble && len(f.frames) == 0 {
			b = make([]byte, secure.PreambleSize)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, err
			}
		} else {
			var hdr [2]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return nil, err
			}
			b = make([]byte, 2+int(binary.BigEndian.Uint16(hdr[:])))
			copy(b, hdr[:])
			if _, err := io.ReadFull(r, b[2:]); err != nil {
				return nil, err
			}
		}
		fr := &frame{off: off, b: b}
		off += len(b)
		f.frames = append(f.frames, len(b))
		f.total = off
		return fr, nil
	}
	mine := tm.dir == dir && tm.op != opNone
	for {
		fr, err := read()
		if err != nil {
			return
		}
		idx := len(f.frames) - 1
		out := [][]byte{fr.b}
		if mine {
			switch tm.op {
			case opFlip:
				if tm.off >= fr.off && tm.off < fr.off+len(fr.b) {
					fr.b[tm.off-fr.off] ^= 1 << tm.bit
					f.applied = true
				}
			case opTruncate:
				if tm.off >= fr.off && tm.off < fr.off+len(fr.b) {
					f.applied = true
					dst.Write(fr.b[:tm.off-fr.off])
					cut()
					return
				}
			case opDrop:
				if idx == tm.frame {
					out, f.applied = nil, true
				}
			case opDup:
				if idx == tm.frame {
					out, f.applied = [][]byte{fr.b, fr.b}, true
				}
			case opSwap:
				if idx == tm.frame {
					// Swap only with a frame that follows at once: one
					// the sender writes after hearing from its peer would
					// never come.
					src.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					_, perr := r.Peek(1)
					src.SetReadDeadline(time.Time{})
					if perr == nil {
						next, err := read()
						if err != nil {
							dst.Write(fr.b)
							return
						}
						out, f.applied = [][]byte{next.b, fr.b}, true
					}
				}
			}
		}
		for _, b := range out {
			if _, err := dst.Write(b); err != nil {
				cut()
				return
			}
		}
	}
}

// alters reports whether tm changes the first end bytes of a direction
// laid out as f, where end falls between frames: what its reader consumes
// before the rest no longer matters to it. A duplicate of the frame that
// ends there is inserted after it, so it alters nothing before end.
func alters(tm tamper, f flow, end int) bool {
	switch tm.op {
	case opFlip, opTruncate:
		return tm.off < end
	}
	frameEnd := 0
	for _, n := range f.frames[:tm.frame+1] {
		frameEnd += n
	}
	if tm.op == opDup {
		return frameEnd < end
	}
	return frameEnd <= end
}

// tamperAttempt is one tampered submission and what came of it.
type tamperAttempt struct {
	tm      tamper
	sid     string
	flows   [2]flow
	job     *client.Job
	err     error
	request bool // the tamper altered the client's request (before its close record)
}

// TestTamperingProxy puts a proxy between a real client and a real server
// that flips a bit, truncates, drops, duplicates or swaps at many offsets
// and frames of the handshake and the records of a submission, in both
// directions. Every alteration the reader consumes is detected: the client
// never gets a job for an altered request, an altered request never
// becomes a job, nothing is left of it on disk, and the server serves
// clean clients throughout.
func TestTamperingProxy(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{
		Script: "#!/bin/sh\nexit 0\n",
		Server: server.Options{HandshakeTimeout: time.Second, IdleTimeout: time.Second},
		// Broken uploads are dropped at once, so that nothing may be left:
		// TestResume* cover the uploads kept for resuming.
		Extra: map[string]string{"MAX_CONCURRENT_JOBS": "1", "UPLOAD_RESUME_HOURS": "0"},
	})
	data := randomBytes(t, 100)
	in := writeInput(t, t.TempDir(), "P1.7", data)

	submit := func(ctx context.Context, addr, sid string) (*client.Job, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Address: addr, Key: s.Key, DialTimeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.Submit(ctx, []string{in}, &client.SubmitOptions{SubmissionID: sid, Reconnects: -1})
	}

	// A clean session shows the frames of each direction.
	p0 := startTamperProxy(t, s.Addr().String())
	var clean *client.Job
	var cleanErr error
	layout := p0.session(t, tamper{}, func(addr string) { clean, cleanErr = submit(ctx, addr, "clean") })
	if cleanErr != nil {
		t.Fatalf("clean submission through the proxy: %v", cleanErr)
	}
	for d, name := range []string{"c2s", "s2c"} {
		t.Logf("%s frames: %v (%d bytes)", name, layout[d].frames, layout[d].total)
	}
	// The client's request is everything before its close record; what
	// the client reads is everything before the server's.
	reqEnd := layout[c2s].total - layout[c2s].frames[len(layout[c2s].frames)-1]

	// Offsets: every byte of the preamble, the handshake and the hello
	// record (and a little more), then the length and both ends of the
	// ciphertext of every later frame.
	offsets := func(d int) []int {
		var out []int
		dense := 80
		if testing.Short() {
			dense = 30
		}
		for o := range min(dense, layout[d].total) {
			out = append(out, o)
		}
		start := 0
		for _, n := range layout[d].frames {
			for _, o := range []int{start, start + 1, start + 2, start + 3, start + n/2, start + n - 2, start + n - 1} {
				if o >= dense && o < start+n {
					out = append(out, o)
				}
			}
			start += n
		}
		return out
	}
	var tampers []tamper
	for d := range 2 {
		for i, o := range offsets(d) {
			tampers = append(tampers,
				tamper{dir: d, op: opFlip, off: o, bit: uint8(i % 8)},
				tamper{dir: d, op: opTruncate, off: o})
		}
		for i := range layout[d].frames {
			tampers = append(tampers,
				tamper{dir: d, op: opDrop, frame: i},
				tamper{dir: d, op: opDup, frame: i},
				tamper{dir: d, op: opSwap, frame: i})
		}
	}

	// Four proxies, each running its share of the tampers in turn.
	const workers = 4
	attempts := make([]tamperAttempt, len(tampers))
	work := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		p := startTamperProxy(t, s.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				a := &attempts[i]
				a.tm = tampers[i]
				a.sid = fmt.Sprintf("tamper-%d", i)
				a.flows = p.session(t, a.tm, func(addr string) { a.job, a.err = submit(ctx, addr, a.sid) })
				a.request = a.tm.dir == c2s && a.flows[c2s].applied && alters(a.tm, layout[c2s], reqEnd)
			}
		}()
	}
	start := time.Now()
	for i := range tampers {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d tampered sessions in %v", len(tampers), time.Since(start).Round(time.Millisecond))

	// Every job the server holds, by submission id.
	c := s.Dial(t)
	q, err := c.Queue(ctx)
	if err != nil {
		t.Fatalf("queue after the tampering: %v", err)
	}
	bySID := map[string][]client.Job{}
	for _, j := range q {
		bySID[j.SubmissionID] = append(bySID[j.SubmissionID], j)
	}
	if js := bySID["clean"]; len(js) != 1 || js[0].JobID != clean.JobID {
		t.Errorf("clean submission: jobs %+v, want %s", js, clean.JobID)
	}
	applied := 0
	for _, a := range attempts {
		if !a.flows[a.tm.dir].applied {
			continue
		}
		applied++
		js := bySID[a.sid]
		if len(js) > 1 {
			t.Errorf("%v: %d jobs for one submission", a.tm, len(js))
		}
		for _, j := range js {
			if len(j.Files) != 1 || !sameContent(j.Files[0].SHA256, j.Files[0].BLAKE3, data) || j.Files[0].Size != int64(len(data)) {
				t.Errorf("%v: job %s holds %+v, not the file sent", a.tm, j.JobID, j.Files)
			}
		}
		if a.request {
			if a.err == nil {
				t.Errorf("%v: altered request accepted as job %s", a.tm, a.job.JobID)
			}
			if len(js) != 0 {
				t.Errorf("%v: altered request became job %s", a.tm, js[0].JobID)
			}
		}
		if a.err == nil {
			if !jobs.ValidID(a.job.JobID) || len(js) != 1 || js[0].JobID != a.job.JobID {
				t.Errorf("%v: client got job %q, server has %+v", a.tm, a.job.JobID, js)
			}
			if len(a.job.Files) != 1 || !sameContent(a.job.Files[0].SHA256, a.job.Files[0].BLAKE3, data) {
				t.Errorf("%v: client got files %+v", a.tm, a.job.Files)
			}
			// Only what the client never reads - the server's close
			// record - may be altered without the client noticing.
			lastOff := layout[s2c].total - layout[s2c].frames[len(layout[s2c].frames)-1]
			if a.tm.dir == s2c && alters(a.tm, layout[s2c], lastOff) {
				t.Errorf("%v: the client did not notice", a.tm)
			}
		}
	}
	t.Logf("%d of %d tampers took effect", applied, len(tampers))
	servertest.Eventually(t, pollTimeout, "upload dirs removed", func() bool { return len(incoming(t, s)) == 0 })
	checkServes(t, ctx, s)
}

// TestReplayedSession records the client's side of a real submission and
// sends it again to the server: the server's fresh ephemeral key makes the
// recorded hello fail, so nothing is queued again.
func TestReplayedSession(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{Server: server.Options{HandshakeTimeout: 2 * time.Second}})
	// A recording proxy: one connection, client to server bytes kept.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	recorded := make(chan []byte, 1)
	go func() {
		cl, err := ln.Accept()
		if err != nil {
			recorded <- nil
			return
		}
		defer cl.Close()
		srv, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			recorded <- nil
			return
		}
		defer srv.Close()
		go func() { io.Copy(cl, srv); cl.(*net.TCPConn).CloseWrite() }()
		var rec []byte
		buf := make([]byte, 4096)
		for {
			n, err := cl.Read(buf)
			rec = append(rec, buf[:n]...)
			srv.Write(buf[:n])
			if err != nil {
				break
			}
		}
		srv.(*net.TCPConn).CloseWrite()
		recorded <- rec
	}()
	c, err := client.Dial(ctx, client.Config{Address: ln.Addr().String(), Key: s.Key})
	if err != nil {
		t.Fatal(err)
	}
	job := submitOne(t, ctx, c, "P1.7", []byte("raw data"))
	c.Close()
	rec := <-recorded
	if len(rec) < 100 {
		t.Fatalf("recorded %d bytes", len(rec))
	}
	waitDone(t, ctx, s.Dial(t), job.JobID)

	for range 3 {
		conn, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(rec)
		// The server answers the handshake (its reply is fresh), then
		// closes when the recorded hello does not decrypt; it never sends
		// a record.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(conn)
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("server still holds the replayed connection open")
		}
		if len(got) > 50 {
			t.Errorf("server sent %d bytes to a replayed session, want at most its handshake reply (50)", len(got))
		}
	}
	q, err := s.Dial(t).Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].JobID != job.JobID {
		t.Errorf("after replays the server has %d jobs, want only %s", len(q), job.JobID)
	}
	checkServes(t, ctx, s)
}
