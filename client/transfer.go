package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
	"github.com/recon-mri/recon/internal/xfer"
)

// Progress reports a transfer: Done of Total bytes, over all files.
type Progress func(done, total int64)

// SubmitOptions are the optional parts of a submission.
type SubmitOptions struct {
	// Options reach the reconstruction script as environment variables
	// (RECON_OPT_<KEY>) and as RECON_OPTIONS_JSON. Keys are 1 to 64 letters,
	// digits or _; values at most 4 KiB.
	Options map[string]string
	// SubmissionID makes a retried submission idempotent: a server that
	// already has a job with this id returns it instead of a new one (and
	// no file is sent again), and a server that kept a broken upload with
	// this id lets it be resumed. When empty, Submit chooses a random one,
	// which makes its own resumes safe.
	SubmissionID string
	// Progress, if not nil, is called as bytes are sent (at most every
	// 125 ms), and once more when an attempt ends, with the bytes written
	// to the connection by then.
	Progress Progress
	// Reconnects is how many times Submit opens a new session and resumes
	// the upload when the connection breaks or stalls (0 means
	// DefaultReconnects; negative means never). It waits a little longer
	// before each, from ReconnectDelay (0 means one second) doubling up to
	// 30 s. A new session the server closes without answering (a busy
	// server over its caps) is one of them, at most AuthRetries times.
	Reconnects     int
	ReconnectDelay time.Duration
	// OnReconnect, if not nil, is called before each reconnect with its
	// number (from 1) and the error that broke the session.
	OnReconnect func(attempt int, err error)
	// OnNote, if not nil, is called with a note the server sends for the
	// user: for example that the part of the upload it had kept after a
	// break was removed, and every file is sent again.
	OnNote func(note string)
	// Retry, if not nil, says how Submit reconnects and resumes, in place
	// of Reconnects, ReconnectDelay and OnReconnect (its zero value:
	// never).
	Retry *Backoff
	// OnUpload, if not nil, is called on each attempt when the server is
	// ready for the files, before any byte is sent, with the bytes it kept
	// from an earlier attempt (sent again only if it kept none) and the
	// total: Progress reports from kept up.
	OnUpload func(kept, total int64)
	// OnExisting, if not nil, is called when the server already had a job
	// for SubmissionID, which Submit returns without sending a file.
	OnExisting func(job Job)
}

// DefaultReconnects is the default of SubmitOptions.Reconnects.
const DefaultReconnects = 5

// Submit sends the files as one job and returns it once the server has
// stored and verified every file and queued the job. Each file is hashed as
// it is sent, and checked by the server against its SHA-256. Names on the
// server are the files' base names, which must be distinct.
//
// When the connection breaks or stalls during the upload, Submit dials
// again and resumes: the server tells how much of each file it kept, and
// only the rest is sent (the kept part is read again locally, to hash the
// whole file). After a reconnect the Client uses the new session.
// Through a relay that loses the backend receiving the files, Submit does
// the same: the relay places the retry on another backend, which takes
// every file from the start, and the caller gets the job from there.
func (c *Client) Submit(ctx context.Context, paths []string, opts *SubmitOptions) (*Job, error) {
	o := SubmitOptions{}
	if opts != nil {
		o = *opts
	}
	if len(paths) == 0 {
		return nil, &localError{errors.New("submit: no files")}
	}
	if err := protocol.ValidateOptions(o.Options); err != nil {
		return nil, &localError{fmt.Errorf("submit: %w", err)}
	}
	if o.SubmissionID == "" {
		o.SubmissionID = NewSubmissionID()
	}
	// Each file is opened to be described, and again to be sent: a job may
	// have more files than a process may hold open.
	stats := make([]os.FileInfo, 0, len(paths))
	sub := protocol.Submit{SubmissionID: o.SubmissionID, Options: o.Options}
	var total int64
	for _, p := range paths {
		st, err := statRegular(p)
		if err != nil {
			return nil, &localError{fmt.Errorf("submit: %w", err)}
		}
		stats = append(stats, st)
		name := filepath.Base(p)
		if err := protocol.ValidateFileName(name); err != nil {
			return nil, &localError{fmt.Errorf("submit: %w", err)}
		}
		sub.Files = append(sub.Files, protocol.FileInfo{Name: name, Size: st.Size()})
		total += st.Size()
	}
	b := o.backoff()
	var job Job
	// A new session the server refuses (ErrClosedUnanswered, as a busy
	// server over its caps does) is tried again as DialRetrying does.
	again := refusalsCounted(Resumable)
	err := b.run(ctx, func() error {
		job = Job{}
		return c.do(ctx, func() error { return c.submitOnce(ctx, &sub, paths, stats, total, &o, &job) })
	}, func(err error) bool { return !c.isClosed() && again(err) }, func() {
		if derr := c.redial(ctx); derr != nil && ctx.Err() == nil && !errors.Is(derr, ErrClosed) {
			// The server may be restarting: the next attempt fails with
			// this error, and the one after that dials again.
			c.mu.Lock()
			c.broken = fmt.Errorf("%w: %w", ErrClosed, derr)
			c.mu.Unlock()
		}
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// backoff is the Backoff of Submit's reconnects: Retry, or the one that
// Reconnects, ReconnectDelay and OnReconnect describe.
func (o *SubmitOptions) backoff() Backoff {
	if o.Retry != nil {
		return *o.Retry
	}
	n := o.Reconnects
	if n == 0 {
		n = DefaultReconnects
	}
	b := Backoff{Retries: n, Delay: o.ReconnectDelay}
	if on := o.OnReconnect; on != nil {
		b.OnRetry = func(retry int, err error, _ time.Duration) { on(retry, err) }
	}
	return b
}

// submitOnce runs one attempt of a submission on the current session.
func (c *Client) submitOnce(ctx context.Context, sub *protocol.Submit, paths []string, stats []os.FileInfo, total int64, o *SubmitOptions, job *Job) error {
	hash, err := c.sessionHash(ctx)
	if err != nil {
		return err
	}
	m, err := rpc.Send(c.conn, protocol.TypeSubmit, sub)
	if err != nil {
		return err
	}
	var ready protocol.SubmitReady
	if err := m.Decode(protocol.TypeSubmitReady, &ready); err != nil {
		return err
	}
	if ready.Note != "" && o.OnNote != nil {
		o.OnNote(ready.Note)
	}
	if ready.Existing && ready.Job != nil {
		*job = *ready.Job
		if o.OnExisting != nil {
			o.OnExisting(*job)
		}
		return nil
	}
	if err := protocol.CheckResume(ready.Resume, sub.Files); err != nil {
		return fmt.Errorf("server sent bad resume offsets: %w", err)
	}
	pw := &progressWriter{w: c.conn, total: total, fn: o.Progress}
	for _, off := range ready.Resume {
		pw.done += off
	}
	if o.Progress != nil {
		// However the attempt ends, the last report is where it got to.
		defer func() { o.Progress(pw.done, total) }()
	}
	if o.OnUpload != nil {
		o.OnUpload(pw.done, total)
	}
	for i, p := range paths {
		var off int64
		if ready.Resume != nil {
			off = ready.Resume[i]
		}
		if err := c.sendPath(p, stats[i], sub.Files[i], hash, off, pw); err != nil {
			// The server may have said why it stopped reading.
			return backendLost(c.serverReason(err))
		}
	}
	m, err = protocol.ReadMessage(c.conn)
	if err != nil {
		return err
	}
	return backendLost(m.Decode(protocol.TypeJob, job))
}

// backendLostError is an unavailable error that came once the files were
// being sent: only a relay gives it then, when it lost the backend that
// was receiving them. Submitting again with the same submission id is
// safe and may succeed: the relay places the submission on another
// backend if the first cannot have made a job of it, and otherwise sends
// it to the first one only (which returns its job, or is still down).
type backendLostError struct{ err error }

func (e *backendLostError) Error() string { return e.err.Error() }
func (e *backendLostError) Unwrap() error { return e.err }

// backendLost marks err as a backendLostError if it is an unavailable
// error.
func backendLost(err error) error {
	if protocol.IsCode(err, protocol.CodeUnavailable) {
		return &backendLostError{err}
	}
	return err
}

// Resumable reports whether a failed Submit may be resumed by a later
// Submit with the same SubmissionID: the connection broke or stalled (not
// a problem with a local file, not a refusal by the server, not a wrong
// key), or a relay lost the backend that was receiving the files (code
// unavailable during the upload: the retry goes to another backend, which
// takes the files from the start). Unavailable before the upload (no
// backend up, or the backend that may hold the job is down) is not
// resumable.
func Resumable(err error) bool {
	var le *localError
	if err == nil || errors.As(err, &le) || errors.Is(err, secure.ErrAuth) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var bl *backendLostError
	if errors.As(err, &bl) {
		return true
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code == protocol.CodeTimeout
	}
	return true
}

// localError is a problem with a local file: retrying cannot help.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// localReader marks the read errors of a local file.
type localReader struct{ r io.Reader }

func (l localReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		err = &localError{err}
	}
	return n, err
}

// statRegular describes the regular file at p, opened without blocking
// (p may be a named pipe).
func statRegular(p string) (os.FileInfo, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	return st, nil
}

// sendPath opens the file at p, checks it is still the file announced as
// st, and sends it from byte off.
func (c *Client) sendPath(p string, st os.FileInfo, fi protocol.FileInfo, hash string, off int64, w io.Writer) error {
	f, err := os.Open(p)
	if err != nil {
		return &localError{err}
	}
	defer f.Close()
	now, err := f.Stat()
	if err != nil {
		return &localError{err}
	}
	if !os.SameFile(st, now) {
		return &localError{fmt.Errorf("%s was replaced after the job was announced", p)}
	}
	return c.sendFile(f, fi, hash, off, w)
}

// sendFile sends the announced size of f from byte off, then the digest
// of the whole file under hash (the session's): the first off bytes
// (which the server kept from an earlier attempt) are read and hashed
// here, not sent.
func (c *Client) sendFile(f *os.File, fi protocol.FileInfo, hash string, off int64, w io.Writer) error {
	h := protocol.NewHash(hash)
	if off > 0 {
		n, err := io.CopyN(h, localReader{f}, off)
		if err != nil {
			if n < off && err == io.EOF {
				return &localError{fmt.Errorf("%s shrank while it was sent", fi.Name)}
			}
			return err
		}
	}
	if _, err := xfer.Copy(w, localReader{f}, fi.Size-off, h); err != nil {
		if errors.Is(err, xfer.ErrShort) {
			return &localError{fmt.Errorf("%s shrank while it was sent: %w", fi.Name, err)}
		}
		return err
	}
	if st, err := f.Stat(); err != nil || st.Size() != fi.Size {
		return &localError{fmt.Errorf("%s changed size while it was sent", fi.Name)}
	}
	return protocol.WriteMessage(c.conn, protocol.TypeFileDone, protocol.NewFileDone(hash, protocol.HexSum(h)))
}

// serverReason turns a failed send into the server's own error when it sent
// one before closing.
func (c *Client) serverReason(sendErr error) error {
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	m, err := protocol.ReadMessage(c.conn)
	if err == nil {
		if derr := m.Decode(protocol.TypeJob, nil); derr != nil {
			var pe *protocol.Error
			if errors.As(derr, &pe) {
				return pe
			}
		}
	}
	return sendErr
}

// LocalFile is a result file written by Fetch: its manifest entry and
// where it was written.
type LocalFile struct {
	FileSum
	Path string `json:"path"`
}

// FetchOptions are the optional parts of a fetch.
type FetchOptions struct {
	// Progress, if not nil, is called as bytes arrive.
	Progress Progress
}

// Fetch downloads the results of a finished job into dir, verifying each
// file's size and digest (BLAKE3 in a session that chose it, else
// SHA-256; each LocalFile carries the SHA-256 the server took of it either
// way), and then confirms receipt so the server can
// delete them. Files are written into a fresh directory beside dir and
// moved into place only once all are verified; dir is created if needed,
// and files of the same name in it are replaced. A job that has not
// finished gives an error with CodeNotFinished (use Wait first).
func (c *Client) Fetch(ctx context.Context, id, dir string, opts *FetchOptions) (*Job, []LocalFile, error) {
	if opts == nil {
		opts = &FetchOptions{}
	}
	var res protocol.Results
	var out []LocalFile
	err := c.do(ctx, func() error {
		hash, err := c.sessionHash(ctx)
		if err != nil {
			return err
		}
		m, err := rpc.Send(c.conn, protocol.TypeFetch, protocol.JobRef{JobID: id})
		if err != nil {
			return err
		}
		if err := m.Decode(protocol.TypeResults, &res); err != nil {
			return err
		}
		out, err = c.receiveResults(id, dir, hash, res.Files, opts.Progress)
		if err != nil {
			return err
		}
		m, err = rpc.Send(c.conn, protocol.TypeAck, protocol.JobRef{JobID: id})
		if err != nil {
			return err
		}
		return m.Decode(protocol.TypeAckDone, &protocol.JobRef{})
	})
	if err != nil {
		return nil, nil, err
	}
	return &res.Job, out, nil
}

func (c *Client) receiveResults(id, dir, hash string, files []FileSum, progress Progress) ([]LocalFile, error) {
	var total int64
	for _, f := range files {
		if err := protocol.ValidateResultName(f.Name); err != nil {
			return nil, fmt.Errorf("server sent a bad result name: %w", err)
		}
		if f.Size < 0 || !protocol.ValidSHA256(f.SHA256) || f.BLAKE3 != "" && !protocol.ValidDigest(f.BLAKE3) {
			return nil, fmt.Errorf("server sent a bad manifest entry for %q", f.Name)
		}
		if f.BLAKE3 != "" && hash != protocol.HashBLAKE3 {
			return nil, fmt.Errorf("server sent a BLAKE3 digest for %q in a session that checks %s", f.Name, hash)
		}
		total += f.Size
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), "."+filepath.Base(dir)+".fetch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	pw := &progressWriter{total: total, fn: progress}
	for _, f := range files {
		if err := receiveFile(c.conn, root, f, pw); err != nil {
			return nil, err
		}
	}
	// Every file is verified: move them into place.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out := make([]LocalFile, 0, len(files))
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.Rename(filepath.Join(tmp, filepath.FromSlash(f.Name)), dst); err != nil {
			return nil, err
		}
		abs, _ := filepath.Abs(dst)
		out = append(out, LocalFile{FileSum: f, Path: abs})
	}
	return out, nil
}

func receiveFile(r io.Reader, root *os.Root, f FileSum, pw *progressWriter) error {
	name := filepath.FromSlash(f.Name)
	if d := filepath.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	fh, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer fh.Close()
	// The manifest's BLAKE3, when it has one (a session that chose it),
	// else its SHA-256.
	hash, want, title := protocol.HashSHA256, f.SHA256, "SHA-256"
	if f.BLAKE3 != "" {
		hash, want, title = protocol.HashBLAKE3, f.BLAKE3, "BLAKE3"
	}
	h := protocol.NewHash(hash)
	pw.w = xfer.NewSyncingWriter(fh)
	if _, err := xfer.Copy(pw, r, f.Size, h); err != nil {
		return fmt.Errorf("receive %s: %w", f.Name, err)
	}
	if got := protocol.HexSum(h); got != want {
		return fmt.Errorf("receive %s: %s mismatch (got %s, manifest says %s)", f.Name, title, got, want)
	}
	if err := xfer.Sync(fh); err != nil {
		return err
	}
	return fh.Close()
}

// progressWriter counts bytes and reports them at most every 1/8 s.
type progressWriter struct {
	w     io.Writer
	done  int64
	total int64
	fn    Progress
	last  time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.fn != nil && (p.done == p.total || time.Since(p.last) > 125*time.Millisecond) {
		p.last = time.Now()
		p.fn(p.done, p.total)
	}
	return n, err
}
