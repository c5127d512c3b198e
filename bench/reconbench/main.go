// Command reconbench drives a running recon server (or relay) through the
// client package for bench/run.sh: small-job latency, jobs per second with
// concurrent clients, a burst of concurrent submissions, filling the queue,
// and the time a restarted server takes until it serves.
//
//	reconbench smalljob   -opts client.opts [-n 200] [-session one|new]
//	reconbench throughput -opts client.opts [-clients 8] [-duration 5s]
//	reconbench burst      -opts client.opts [-clients 256] [-size 1048576]
//	reconbench fill       -opts client.opts [-n 10000] [-clients 8]
//	reconbench restart    -opts client.opts -recon BIN -server-opts FILE [-runs 3] [-want-queued N]
//	reconbench freeport
//	reconbench limits     [-duration 1s] [-copy-dir DIR] [-copy-mib 1024] [-copy-runs 3]
//
// Each prints human-readable lines and one final line starting with
// "RESULT" and holding key=value pairs for the script to parse. Every loop
// is bounded in count and in time; every server it starts it also stops.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zeebo/blake3"

	"github.com/recon-mri/recon/client"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: reconbench smalljob|throughput|burst|fill|restart [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"smalljob":   smallJob,
		"throughput": throughput,
		"burst":      burst,
		"fill":       fill,
		"restart":    restart,
		"freeport":   freePort,
		"limits":     limits,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "reconbench: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "reconbench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// common holds the flags every command has.
type common struct {
	opts    string
	workDir string
	timeout time.Duration
	cfg     client.Config
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.opts, "opts", "client.opts", "client config `file` (SERVER_HOSTNAME, SERVER_PORT, SHARED_KEY)")
	fs.StringVar(&c.workDir, "dir", os.TempDir(), "`directory` for input files and downloads")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after this long")
}

func (c *common) load() error {
	cfg, _, err := client.LoadConfig(c.opts)
	if err != nil {
		return err
	}
	cfg.DialTimeout = 30 * time.Second
	c.cfg = cfg
	return nil
}

// smallFile writes a file of n zero bytes into dir and returns its path.
func smallFile(dir, name string, n int) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, make([]byte, n), 0o600)
}

// job runs one whole job the way `recon submit` does: submit, wait, and
// fetch the results if there are any.
func job(ctx context.Context, c *client.Client, path, out string) error {
	j, err := c.Submit(ctx, []string{path}, nil)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	if j, err = c.Wait(ctx, j.JobID, nil); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	if j.State != client.StateSucceeded {
		return fmt.Errorf("job %s %s: %s", j.JobID, j.State, j.Error)
	}
	if len(j.Results) > 0 {
		if _, _, err := c.Fetch(ctx, j.JobID, filepath.Join(out, j.JobID), nil); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
	}
	return nil
}

// quantile returns the q-quantile (nearest rank) of ds in milliseconds.
func quantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Microseconds()) / 1000
}

func smallJob(args []string) error {
	fs := flag.NewFlagSet("smalljob", flag.ExitOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 200, "number of jobs, one after another")
	session := fs.String("session", "one", "\"one\": one session for all jobs; \"new\": dial a session per job")
	fs.Parse(args)
	if err := c.load(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	p, err := smallFile(c.workDir, "small.raw", 1024)
	if err != nil {
		return err
	}
	var cl *client.Client
	if *session == "one" {
		if cl, err = client.Dial(ctx, c.cfg); err != nil {
			return err
		}
		defer cl.Close()
	}
	lat := make([]time.Duration, 0, *n)
	for range *n {
		start := time.Now()
		cj := cl
		if cj == nil {
			if cj, err = client.Dial(ctx, c.cfg); err != nil {
				return err
			}
		}
		err := job(ctx, cj, p, c.workDir)
		if cl == nil {
			cj.Close()
		}
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(start))
	}
	fmt.Printf("%d jobs (session %s): p50 %.2f ms, p90 %.2f ms\n", *n, *session, quantile(lat, 0.5), quantile(lat, 0.9))
	fmt.Printf("RESULT p50_ms=%.2f p90_ms=%.2f n=%d\n", quantile(lat, 0.5), quantile(lat, 0.9), *n)
	return nil
}

func throughput(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ExitOnError)
	var c common
	c.register(fs)
	clients := fs.Int("clients", 8, "concurrent clients, each with its own session")
	d := fs.Duration("duration", 5*time.Second, "how long to submit")
	fs.Parse(args)
	if err := c.load(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	p, err := smallFile(c.workDir, "small.raw", 1024)
	if err != nil {
		return err
	}
	cls := make([]*client.Client, *clients)
	for i := range cls {
		if cls[i], err = client.Dial(ctx, c.cfg); err != nil {
			return err
		}
		defer cls[i].Close()
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	start := time.Now()
	end := start.Add(*d)
	for _, cl := range cls {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				if err := job(ctx, cl, p, c.workDir); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	rate := float64(done.Load()) / el.Seconds()
	fmt.Printf("%d jobs by %d clients in %.2f s: %.0f jobs/s\n", done.Load(), *clients, el.Seconds(), rate)
	fmt.Printf("RESULT jobs_per_s=%.0f jobs=%d clients=%d seconds=%.2f\n", rate, done.Load(), *clients, el.Seconds())
	return nil
}

// dialRetry dials until the server admits the connection. A server refuses
// connections beyond its per-address caps by closing them, which the
// client sees as a failed handshake; such a client retries after a short,
// jittered pause, at most tries times.
func dialRetry(ctx context.Context, cfg client.Config, tries int, retries *atomic.Int64) (*client.Client, error) {
	wait := 5 * time.Millisecond
	for i := 0; ; i++ {
		c, err := client.Dial(ctx, cfg)
		if err == nil || i == tries-1 || ctx.Err() != nil {
			return c, err
		}
		retries.Add(1)
		select {
		case <-time.After(wait/2 + rand.N(wait)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func burst(args []string) error {
	fs := flag.NewFlagSet("burst", flag.ExitOnError)
	var c common
	c.register(fs)
	clients := fs.Int("clients", 256, "clients started at once")
	size := fs.Int("size", 1<<20, "bytes each client submits")
	fs.Parse(args)
	if err := c.load(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	p, err := smallFile(c.workDir, "burst.raw", *size)
	if err != nil {
		return err
	}
	var ok, retries atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	gate := make(chan struct{})
	for range *clients {
		wg.Go(func() {
			<-gate
			err := func() error {
				cl, err := dialRetry(ctx, c.cfg, 100, &retries)
				if err != nil {
					return err
				}
				defer cl.Close()
				_, err = cl.Submit(ctx, []string{p}, nil)
				return err
			}()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			ok.Add(1)
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("%d of %d clients submitted %d bytes each in %.2f s (%d refused dials retried)\n",
		ok.Load(), *clients, *size, el.Seconds(), retries.Load())
	if firstErr != nil {
		fmt.Printf("first error: %v\n", firstErr)
	}
	fmt.Printf("RESULT ok=%d clients=%d seconds=%.2f retries=%d\n", ok.Load(), *clients, el.Seconds(), retries.Load())
	return nil
}

func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 10000, "jobs to queue")
	clients := fs.Int("clients", 8, "concurrent clients")
	fs.Parse(args)
	if err := c.load(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	p, err := smallFile(c.workDir, "fill.raw", 1024)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	start := time.Now()
	for range *clients {
		wg.Go(func() {
			cl, err := client.Dial(ctx, c.cfg)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for next.Add(1) <= int64(*n) {
				if _, err := cl.Submit(ctx, []string{p}, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("queued %d jobs in %.1f s (%.0f submissions/s)\n", *n, el.Seconds(), float64(*n)/el.Seconds())
	fmt.Printf("RESULT jobs=%d seconds=%.1f\n", *n, el.Seconds())
	return nil
}

func restart(args []string) error {
	fs := flag.NewFlagSet("restart", flag.ExitOnError)
	var c common
	c.register(fs)
	recon := fs.String("recon", "bin/recon", "the recon `binary`")
	serverOpts := fs.String("server-opts", "recon.opts", "the server's config `file`")
	runs := fs.Int("runs", 3, "restarts to time")
	wantQueued := fs.Int("want-queued", 0, "fail unless the restarted server reports this many queued jobs")
	fs.Parse(args)
	if err := c.load(); err != nil {
		return err
	}
	c.cfg.DialTimeout = time.Second
	var times []time.Duration
	for i := range *runs {
		el, queued, err := startAndTime(*recon, *serverOpts, c.cfg, c.timeout)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		if *wantQueued > 0 && queued != *wantQueued {
			return fmt.Errorf("run %d: the server reports %d queued jobs, want %d", i+1, queued, *wantQueued)
		}
		fmt.Printf("run %d: serving after %.0f ms with %d jobs queued\n", i+1, float64(el.Microseconds())/1000, queued)
		times = append(times, el)
	}
	fmt.Printf("RESULT p50_ms=%.0f max_ms=%.0f runs=%d\n", quantile(times, 0.5), quantile(times, 1), *runs)
	return nil
}

// startAndTime starts `recon server`, polls it with status requests until
// one succeeds, and returns the time from the start of the process. The
// server is then killed (SIGKILL: a crash, so that the next start recovers
// from one) and reaped.
func startAndTime(recon, opts string, cfg client.Config, timeout time.Duration) (time.Duration, int, error) {
	cmd := exec.Command(recon, "server", "--opts", opts)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}()
	deadline := start.Add(min(timeout, 60*time.Second))
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return 0, 0, fmt.Errorf("server exited: %v: %s", err, stderr.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cl, err := client.Dial(ctx, cfg)
		if err == nil {
			st, serr := cl.Status(ctx)
			cl.Close()
			cancel()
			if serr == nil {
				if st.StartedAt.Before(start.Add(-time.Second)) {
					return 0, 0, fmt.Errorf("another server, started at %s, answers on %s", st.StartedAt, cfg.Address)
				}
				return time.Since(start), st.Jobs[client.StateQueued], nil
			}
			err = serr
		}
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return 0, 0, errors.New("the server did not serve within the time limit")
}

// freePort prints a TCP port on 127.0.0.1 that was free a moment ago.
func freePort([]string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// limits measures, on one core, the per-byte work every transfer of recon
// does on both ends: SHA-256 over 256 KiB blocks and AES-GCM sealing of 32
// KiB records (AES-256, recon's; AES-128, OpenSSH's aes128-gcm).
func limits(args []string) error {
	fs := flag.NewFlagSet("limits", flag.ExitOnError)
	d := fs.Duration("duration", time.Second, "time per measurement")
	copyDir := fs.String("copy-dir", "", "also measure a plain file-to-file copy over loopback TCP with its files in this directory")
	copyMiB := fs.Int("copy-mib", 1024, "size of the plain copy in MiB")
	copyRuns := fs.Int("copy-runs", 3, "runs of the plain copy; the one with the least CPU time is reported")
	fs.Parse(args)
	rate := func(block int, f func([]byte)) float64 {
		buf := make([]byte, block, block+64)
		f(buf) // warm up
		n, start := 0, time.Now()
		for time.Since(start) < *d {
			for range 16 {
				f(buf)
			}
			n += 16 * block
		}
		return float64(n) / time.Since(start).Seconds() / 1e6
	}
	h := sha256.New()
	shaRate := rate(256<<10, func(b []byte) { h.Write(b) })
	bh := blake3.New()
	b3Rate := rate(256<<10, func(b []byte) { bh.Write(b) })
	gcm := func(keyLen int) func([]byte) {
		blk, err := aes.NewCipher(make([]byte, keyLen))
		if err != nil {
			panic(err)
		}
		a, err := cipher.NewGCM(blk)
		if err != nil {
			panic(err)
		}
		nonce := make([]byte, a.NonceSize())
		return func(b []byte) { a.Seal(b[:0], nonce, b, nil) }
	}
	aes256 := rate(32<<10, gcm(32))
	aes128 := rate(32<<10, gcm(16))
	fmt.Printf("one core: SHA-256 %.0f MB/s, BLAKE3 %.0f MB/s, AES-256-GCM %.0f MB/s, AES-128-GCM %.0f MB/s\n", shaRate, b3Rate, aes256, aes128)
	result := fmt.Sprintf("RESULT sha256_mbps=%.0f blake3_mbps=%.0f aes256gcm_mbps=%.0f aes128gcm_mbps=%.0f", shaRate, b3Rate, aes256, aes128)
	if *copyDir != "" {
		// A floor: what disturbs a run (other work on a shared machine)
		// only adds CPU time, so the least of a few runs is the measure.
		mbps, cpu := 0.0, math.Inf(1)
		for i := range max(*copyRuns, 1) {
			m, c, err := plainCopy(*copyDir, int64(*copyMiB)<<20)
			if err != nil {
				return fmt.Errorf("plain copy: %w", err)
			}
			fmt.Printf("plain copy %d (file -> loopback TCP -> file, no crypto, no hash): %.0f MB/s, %.2f CPU-s/GiB\n", i+1, m, c)
			if c < cpu {
				mbps, cpu = m, c
			}
		}
		result += fmt.Sprintf(" copy_mbps=%.0f copy_cpu_s_per_gib=%.2f", mbps, cpu)
	}
	fmt.Println(result)
	return nil
}

// plainCopy measures what moving a file costs with no crypto and no
// hashing: a file of n bytes in dir is read, sent over a loopback TCP
// connection and written to a second file in dir, in 256 KiB blocks, the
// sender and the receiver in goroutines of this process. It returns the
// rate and the process's CPU time (user and system) per GiB, which is the
// kernel's share of every transfer: file reads, TCP copies and page-cache
// writes.
func plainCopy(dir string, n int64) (mbps, cpuPerGiB float64, err error) {
	src := filepath.Join(dir, "reconbench-copy.src")
	dst := filepath.Join(dir, "reconbench-copy.dst")
	defer os.Remove(src)
	defer os.Remove(dst)
	if err := writeRandomFile(src, n); err != nil {
		return 0, 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	const block = 256 << 10
	recvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recvDone <- err
			return
		}
		defer c.Close()
		f, err := os.Create(dst)
		if err != nil {
			recvDone <- err
			return
		}
		buf := make([]byte, block)
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(struct{ io.Reader }{c}, n), buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		recvDone <- err
	}()
	cpu0 := processCPU()
	start := time.Now()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	f, err := os.Open(src)
	if err != nil {
		c.Close()
		return 0, 0, err
	}
	// The plain Writer and Reader wrappers keep io.Copy from using
	// sendfile and splice: recon cannot, as it seals every byte.
	_, err = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{f}, make([]byte, block))
	f.Close()
	c.Close()
	if rerr := <-recvDone; err == nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, err
	}
	wall := time.Since(start)
	cpu := processCPU() - cpu0
	return float64(n) / wall.Seconds() / 1e6, cpu.Seconds() / (float64(n) / (1 << 30)), nil
}

// writeRandomFile writes n random bytes to path.
func writeRandomFile(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rand.Uint32())
	}
	for left := n; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
