//go:build unix

// The tests of this file start real servers (internal/servertest), which
// run on Unix only.

package client_test

// The examples run against a real recon server on 127.0.0.1, started by
// TestMain below, in a directory that holds what a user would have:
//
//   - recon.opts, a client config with SERVER_HOSTNAME, SERVER_PORT and
//     SHARED_KEY;
//   - raw-data files P00000.7 (1024 bytes), P00001.7 (2048 bytes),
//     scan.cfl and scan.hdr, and empty.7 (0 bytes).
//
// The server's reconstruction script writes NAME.out for every input NAME,
// saying what it did, and fails on an empty file.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/config"
	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/server"
)

// Connect, submit a file with options, wait for the job, download its
// results, close.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, _, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	job, err := c.Submit(ctx, []string{"P00000.7"}, &client.SubmitOptions{
		Options: map[string]string{"method": "pics"},
	})
	if err != nil {
		log.Fatal(err)
	}
	job, err = c.Wait(ctx, job.JobID, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("job", job.State)

	_, files, err := c.Fetch(ctx, job.JobID, filepath.Join("results", job.JobID), nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s", f.Name, b)
	}
	// Output:
	// job succeeded
	// P00000.7.out: P00000.7 (1024 bytes) reconstructed with method=pics
}

// LoadConfig reads SERVER_HOSTNAME, SERVER_PORT and SHARED_KEY from a
// recon.opts file; a Config can also be written directly.
func ExampleLoadConfig() {
	cfg, warnings, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	for _, w := range warnings {
		log.Println("recon.opts:", w)
	}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("server:", host)
	fmt.Println("key:", len(cfg.Key), "characters")

	// Without a file, write the Config yourself:
	//	cfg := client.Config{Address: "recon.example.org:60000", Key: sharedKey}

	// Output:
	// server: 127.0.0.1
	// key: 44 characters
}

// Dial connects and authenticates; one connection carries any number of
// requests, one at a time.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, _, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected; the server runs", st.MaxWorkers, "jobs at a time")
	// Output:
	// connected; the server runs 2 jobs at a time
}

// A key the server does not know fails the handshake with ErrAuth.
func ExampleDial_wrongKey() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, _, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Key = "hkQ6JOSFsKFnoqL8ifKFHQ1f9SxUTPuXnVKUqgHKuKk=" // some other key
	_, err = client.Dial(ctx, cfg)
	fmt.Println(errors.Is(err, client.ErrAuth))
	// Output:
	// true
}

// Submit sends files as one job. Options reach the reconstruction script as
// environment variables; a SubmissionID makes a retry return the same job
// instead of queueing a second one.
func ExampleClient_Submit() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	opts := &client.SubmitOptions{
		Options:      map[string]string{"method": "fft", "threads": "4"},
		SubmissionID: "scan-2024-05-17-0001",
	}
	job, err := c.Submit(ctx, []string{"scan.cfl", "scan.hdr"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range job.Files {
		fmt.Println(f.Name, f.Size)
	}
	fmt.Println("options:", job.Options)

	// The connection broke before the job id arrived? Submit again with the
	// same SubmissionID: no file is sent twice.
	again, err := c.Submit(ctx, []string{"scan.cfl", "scan.hdr"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same job:", again.JobID == job.JobID)

	if _, err := c.Wait(ctx, job.JobID, nil); err != nil {
		log.Fatal(err)
	}
	// Output:
	// scan.cfl 4096
	// scan.hdr 23
	// options: map[method:fft threads:4]
	// same job: true
}

// Wait follows a job to its end. The callback sees each state the server
// reports: queued (with the position), running, and the final state.
func ExampleClient_Wait() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	job, err := c.Submit(ctx, []string{"P00001.7"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	var states []client.JobState
	job, err = c.Wait(ctx, job.JobID, func(j client.Job) {
		// A progress display would update here: j.State, and j.Position
		// while the job is queued.
		states = append(states, j.State)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("last event:", states[len(states)-1])
	fmt.Println(job.State, "with exit code", *job.ExitCode)
	fmt.Println("results:", len(job.Results))
	// Output:
	// last event: succeeded
	// succeeded with exit code 0
	// results: 1
}

// A job whose script fails ends in state failed, with the exit code and the
// script's last lines of standard error.
func ExampleClient_Wait_failed() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	job, err := c.Submit(ctx, []string{"empty.7"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	job, err = c.Wait(ctx, job.JobID, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State, "with exit code", *job.ExitCode)
	fmt.Println(strings.Contains(job.Error, "empty.7 is empty"))
	// Output:
	// failed with exit code 1
	// true
}

// Job reports one job's state, for example after reconnecting. An unknown
// id is an error with CodeNotFound.
func ExampleClient_Job() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	submitted, err := c.Submit(ctx, []string{"P00000.7", "P00001.7"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Wait(ctx, submitted.JobID, nil); err != nil {
		log.Fatal(err)
	}

	job, err := c.Job(ctx, submitted.JobID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State, len(job.Files), "inputs")
	for _, r := range job.Results {
		fmt.Println("result", r.Name, r.Size)
	}

	_, err = c.Job(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	fmt.Println("unknown job:", client.IsCode(err, client.CodeNotFound))
	// Output:
	// succeeded 2 inputs
	// result P00000.7.out 52
	// result P00001.7.out 52
	// unknown job: true
}

// Queue lists the jobs that have not finished, running first, and those
// that finished in the last 24 hours.
func ExampleClient_Queue() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	mine := map[string]bool{}
	for _, name := range []string{"P00000.7", "P00001.7"} {
		job, err := c.Submit(ctx, []string{name}, nil)
		if err != nil {
			log.Fatal(err)
		}
		mine[job.JobID] = true
	}
	// Waiting first makes the listing below the same on every run.
	for id := range mine {
		if _, err := c.Wait(ctx, id, nil); err != nil {
			log.Fatal(err)
		}
	}

	jobs, err := c.Queue(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, j := range jobs {
		if mine[j.JobID] {
			fmt.Println(j.Files[0].Name, j.State, len(j.Results), "result(s)")
		}
	}
	// Unordered output:
	// P00000.7 succeeded 1 result(s)
	// P00001.7 succeeded 1 result(s)
}

// Status reports the server: version, uptime, workers and jobs by state.
func ExampleClient_Status() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	st, err := c.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version:", st.Version)
	fmt.Println("workers:", st.MaxWorkers)
	// Output:
	// version: example
	// workers: 2
}

// Fetch downloads a finished job's results, verifies each file's SHA-256
// and confirms receipt, after which the server deletes them: a second
// fetch is an error with CodeGone.
func ExampleClient_Fetch() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	job, err := c.Submit(ctx, []string{"scan.cfl", "scan.hdr"}, &client.SubmitOptions{
		Options: map[string]string{"method": "pics"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Wait(ctx, job.JobID, nil); err != nil {
		log.Fatal(err)
	}

	dir := filepath.Join("results", job.JobID)
	job, files, err := c.Fetch(ctx, job.JobID, dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name)) // f.Path is the same file
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s", f.Name, b)
	}

	_, _, err = c.Fetch(ctx, job.JobID, dir, nil)
	fmt.Println("fetched again:", client.IsCode(err, client.CodeGone))
	// Output:
	// succeeded
	// scan.cfl.out: scan.cfl (4096 bytes) reconstructed with method=pics
	// scan.hdr.out: scan.hdr (23 bytes) reconstructed with method=pics
	// fetched again: true
}

// Collect waits for a job and downloads its results, each step trying
// again on a new session when the connection breaks. A submission id
// derived from the files and options makes the same submission, made
// again, return the job it became instead of a new one.
func ExampleClient_Collect() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)
	defer c.Close()

	paths := []string{"P00001.7"}
	options := map[string]string{"method": "sense"}
	sid, err := client.SubmissionIDFor(paths, options)
	if err != nil {
		log.Fatal(err)
	}
	job, err := c.Submit(ctx, paths, &client.SubmitOptions{Options: options, SubmissionID: sid})
	if err != nil {
		log.Fatal(err)
	}
	retry := client.Backoff{Retries: 3}
	done, files, err := c.Collect(ctx, job, filepath.Join("collected", job.JobID), &client.CollectOptions{Retry: retry})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(done.State, len(files), "file:", files[0].Name)

	var existing bool
	again, err := c.Submit(ctx, paths, &client.SubmitOptions{Options: options, SubmissionID: sid,
		OnExisting: func(client.Job) { existing = true }})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("submitted again: same job:", again.JobID == job.JobID, "existing:", existing)
	_, files, err = c.Collect(ctx, again, filepath.Join("collected", "again"), &client.CollectOptions{Retry: retry})
	fmt.Println("collected again:", len(files), "files", err)
	// Output:
	// succeeded 1 file: P00001.7.out
	// submitted again: same job: true existing: true
	// collected again: 0 files <nil>
}

// DialRetrying connects to a server that may be starting or restarting,
// and WaitRetrying and FetchRetrying follow a job through broken
// connections and (through a relay) a backend that is down for a while,
// each trying again as the Backoff says.
func ExampleDialRetrying() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, _, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	b := client.Backoff{
		Retries: 5, // waiting 1 s, 2 s, 4 s, 8 s, 16 s
		OnRetry: func(retry int, err error, wait time.Duration) {
			log.Printf("%v; trying again in %v (%d of 5)", err, wait, retry)
		},
	}
	c, err := client.DialRetrying(ctx, cfg, b)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	job, err := c.Submit(ctx, []string{"P00001.7"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if job, err = c.WaitRetrying(ctx, job.JobID, nil, b); err != nil {
		log.Fatal(err)
	}
	_, files, err := c.FetchRetrying(ctx, job.JobID, filepath.Join("results", job.JobID), nil, b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State, len(files), "file")
	// Output:
	// succeeded 1 file
}

// Close ends the session; requests on a closed client fail with ErrClosed.
func ExampleClient_Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := dial(ctx)

	if err := c.Close(); err != nil {
		log.Fatal(err)
	}
	_, err := c.Status(ctx)
	fmt.Println(errors.Is(err, client.ErrClosed))
	// Output:
	// true
}

// dial connects with the settings of recon.opts, as in ExampleDial.
func dial(ctx context.Context) *client.Client {
	cfg, _, err := client.LoadConfig("recon.opts")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// exampleScript is the examples' reconstruction script: NAME.out for every
// input NAME, and a failure on an empty input.
const exampleScript = `#!/bin/sh
set -eu
in="$1"; out="$3"
for f in "$in"/*; do
  n=$(basename "$f")
  size=$(wc -c < "$f" | tr -d ' ')
  if [ "$size" -eq 0 ]; then
    echo "$n is empty" >&2
    exit 1
  fi
  echo "$n ($size bytes) reconstructed with method=${RECON_OPT_METHOD:-fft}" > "$out/$n.out"
done
`

// TestMain starts a real server on 127.0.0.1 (a port the kernel picks) with
// its data in a temporary directory, writes the client's recon.opts and the
// raw-data files there, and runs the tests and examples in that directory:
// tests of this package that read files of the source tree (testdata/...)
// must not rely on the working directory.
func TestMain(m *testing.M) {
	os.Exit(runWithServer(m))
}

func runWithServer(m *testing.M) int {
	dir, err := os.MkdirTemp("", "recon-client-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	srvDir := filepath.Join(dir, "server")
	srv, key, err := startExampleServer(srvDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the example server:", err)
		return 1
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "shut the example server down:", err)
		}
	}()

	// What a user has: a client config with three keys, and raw data.
	files := map[string][]byte{
		"recon.opts": fmt.Appendf(nil, "SERVER_HOSTNAME = 127.0.0.1\nSERVER_PORT = %d\nSHARED_KEY = %s\n",
			srv.Addr().(*net.TCPAddr).Port, key),
		"P00000.7": pattern(1024),
		"P00001.7": pattern(2048),
		"scan.cfl": pattern(4096),
		"scan.hdr": []byte("# Dimensions\n32 32 1 1\n"),
		"empty.7":  nil,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Chdir(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.Chdir(wd)

	code := m.Run()
	if code != 0 {
		// The server's side of the story: the end of its log.
		if b, err := os.ReadFile(filepath.Join(srvDir, "recon.log")); err == nil {
			lines := strings.SplitAfter(string(b), "\n")
			fmt.Fprintf(os.Stderr, "example server log (end):\n%s", strings.Join(lines[max(0, len(lines)-40):], ""))
		}
	}
	return code
}

// startExampleServer writes a server config with fresh keys, ports 0 on
// 127.0.0.1 and the example script into dir, and starts the server. It
// returns the server and its SHARED_KEY.
func startExampleServer(dir string) (*server.Server, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	script := filepath.Join(dir, "recon_script.sh")
	if err := os.WriteFile(script, []byte(exampleScript), 0o755); err != nil {
		return nil, "", err
	}
	key := keys.MustGenerate().Encode()
	opts := strings.Join([]string{
		"SERVER_HOSTNAME = 127.0.0.1",
		"SERVER_PORT = 0",
		"SHARED_KEY = " + key,
		"SERVER_ADMIN_HOSTNAME = 127.0.0.1",
		"SERVER_ADMIN_PORT = 0",
		"SERVER_ADMIN_SHARED_KEY = " + keys.MustGenerate().Encode(),
		"TRUSTED_IPS = 127.0.0.1",
		"RECON_SCRIPT_PATH = " + script,
		"RECON_SERVER_BASE_PFILE_DIR = data/inputs",
		"RECON_JOB_OUTPUT_BASE_DIR = data/outputs",
		"RECON_SERVER_STATE_DIR = data/state",
		"LOG_FILEPATH = recon.log",
		"MAX_CONCURRENT_JOBS = 2",
		"MIN_FREE_DISK_MB = 16",
		// Run jobs at once, however busy the machine is.
		"MAX_CPU_LOAD_PERCENT = 100",
		"MIN_AVAILABLE_MEMORY_MB = 0",
	}, "\n") + "\n"
	optsPath := filepath.Join(dir, "recon.opts")
	if err := os.WriteFile(optsPath, []byte(opts), 0o600); err != nil {
		return nil, "", err
	}
	cfg, _, err := config.LoadServer(optsPath)
	if err != nil {
		return nil, "", err
	}
	logf, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", err
	}
	// The file stays open until the process ends: the server logs until
	// Shutdown returns.
	log := slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(cfg, log, server.Options{Version: "example"})
	if err != nil {
		return nil, "", err
	}
	if err := srv.Start(); err != nil {
		srv.Shutdown(context.Background())
		return nil, "", err
	}
	return srv, key, nil
}

// pattern returns n bytes of test data.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
