package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// maxMessageSessions is how many sessions send a maximal control message
// at once in the memory test: half of what one address may open
// (listen.MaxConnsPerIP).
const maxMessageSessions = 64

// maxMessagePeakRSS is the bound the test asserts on the server's peak
// resident memory while maxMessageSessions maximal messages arrive at
// once: about twice what was measured. The budget lets 8 maximal messages
// (128 MiB) be read and decoded at a time, each decoded in place; the
// server peaked at 453 to 496 MiB (BenchmarkControlMessageMemory,
// docs/PERFORMANCE.md), where it took 5.5 GB before.
const maxMessagePeakRSS = 1 << 30

// maximalMessage is a submit message of MaxMessageSize bytes that is read
// and decoded in full before it is refused: 100,000 file entries (the
// most a message may list; more than MAX_FILES_PER_JOB) and one option
// value filling the rest, far over MaxOptionValue.
func maximalMessage(t testing.TB) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"type":"submit","body":{"files":[`)
	for i := range protocol.MaxFilesAbsolute {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"f%06d","size":1}`, i)
	}
	b.WriteString(`],"options":{"k":"`)
	const tail = `"}}}`
	b.WriteString(strings.Repeat("v", protocol.MaxMessageSize-b.Len()-len(tail)))
	b.WriteString(tail)
	msg := b.String()
	if len(msg) != protocol.MaxMessageSize || !json.Valid([]byte(msg)) {
		t.Fatalf("maximal message of %d bytes, valid %v", len(msg), json.Valid([]byte(msg)))
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// vmHWM reads the peak resident set size of process pid, in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// sendMaximalMessages starts a `recon server`, opens sessions sessions,
// has each send a maximal control message at once, waits for every answer
// (each one an error: too many files, the option too long) and returns the server's
// peak resident memory before and after.
func sendMaximalMessages(t testing.TB, sessions int) (before, after int64) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script.sh")
	writeFile(t, script, "#!/bin/sh\nexit 0\n", 0o755)
	key := serverOpts(t, dir, script)
	srv := startServer(t, dir, "recon.opts")
	k, err := keys.Parse(key)
	if err != nil {
		t.Fatal(err)
	}
	msg := maximalMessage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := make([]*secure.Conn, sessions)
	for i := range conns {
		if conns[i], err = secure.Dial(ctx, srv.clientAddr, secure.Config{Key: k, Role: secure.RoleClient}); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		defer conns[i].Close()
	}
	before = vmHWM(t, srv.cmd.Process.Pid)
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			if _, err := c.Write(msg); err != nil {
				errs <- fmt.Errorf("send: %w", err)
				return
			}
			m, err := protocol.ReadMessage(c)
			if err != nil {
				errs <- fmt.Errorf("read the answer: %w", err)
				return
			}
			err = m.Decode(protocol.TypeSubmitReady, nil)
			if !protocol.IsCode(err, protocol.CodeTooLarge) && !protocol.IsCode(err, protocol.CodeBadRequest) {
				errs <- fmt.Errorf("answer %q: %v, want too_large or bad_request", m.Type, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return before, vmHWM(t, srv.cmd.Process.Pid)
}

// TestControlMessageMemory sends maxMessageSessions maximal control
// messages at once to a `recon server` process: all are read, decoded and
// answered, and the server's peak resident memory stays under
// maxMessagePeakRSS, however many sessions send at once.
func TestControlMessageMemory(t *testing.T) {
	before, after := sendMaximalMessages(t, maxMessageSessions)
	t.Logf("server peak RSS: %d MiB before, %d MiB after %d maximal messages at once", before>>20, after>>20, maxMessageSessions)
	if after > maxMessagePeakRSS {
		t.Errorf("server peak RSS %d MiB after %d maximal control messages at once, want at most %d MiB",
			after>>20, maxMessageSessions, maxMessagePeakRSS>>20)
	}
}

// BenchmarkControlMessageMemory measures the server's peak resident memory
// while maxMessageSessions sessions each send a maximal control message
// at once: in total (peak-MiB), above its idle peak (added-MiB) and per
// message (added-MiB/msg). Run it with -benchtime=1x; each run starts a
// fresh server.
func BenchmarkControlMessageMemory(b *testing.B) {
	for b.Loop() {
		before, after := sendMaximalMessages(b, maxMessageSessions)
		b.ReportMetric(float64(after)/(1<<20), "peak-MiB")
		b.ReportMetric(float64(after-before)/(1<<20), "added-MiB")
		b.ReportMetric(float64(after-before)/(1<<20)/maxMessageSessions, "added-MiB/msg")
	}
}
