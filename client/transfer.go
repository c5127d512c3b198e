package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/recon-mri/recon/internal/protocol"
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
	// no file is sent again).
	SubmissionID string
	// Progress, if not nil, is called as bytes are sent.
	Progress Progress
}

// Submit sends the files as one job and returns it once the server has
// stored and verified every file and queued the job. Each file is read
// once, hashed as it is sent, and checked by the server against its
// SHA-256. Names on the server are the files' base names, which must be
// distinct.
func (c *Client) Submit(ctx context.Context, paths []string, opts *SubmitOptions) (*Job, error) {
	if opts == nil {
		opts = &SubmitOptions{}
	}
	if len(paths) == 0 {
		return nil, errors.New("submit: no files")
	}
	if err := protocol.ValidateOptions(opts.Options); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	// Each file is opened to be described, and again to be sent: a job may
	// have more files than a process may hold open.
	stats := make([]os.FileInfo, 0, len(paths))
	sub := protocol.Submit{SubmissionID: opts.SubmissionID, Options: opts.Options}
	var total int64
	for _, p := range paths {
		st, err := statRegular(p)
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		stats = append(stats, st)
		name := filepath.Base(p)
		if err := protocol.ValidateFileName(name); err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		sub.Files = append(sub.Files, protocol.FileInfo{Name: name, Size: st.Size()})
		total += st.Size()
	}
	var job Job
	err := c.do(ctx, func() error {
		m, err := c.roundTrip(protocol.TypeSubmit, sub)
		if err != nil {
			return err
		}
		var ready protocol.SubmitReady
		if err := m.Decode(protocol.TypeSubmitReady, &ready); err != nil {
			return err
		}
		if ready.Existing && ready.Job != nil {
			job = *ready.Job
			return nil
		}
		pw := &progressWriter{w: c.conn, total: total, fn: opts.Progress}
		for i, p := range paths {
			if err := c.sendPath(p, stats[i], sub.Files[i], pw); err != nil {
				// The server may have said why it stopped reading.
				return c.serverReason(err)
			}
		}
		m, err = protocol.ReadMessage(c.conn)
		if err != nil {
			return err
		}
		return m.Decode(protocol.TypeJob, &job)
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

func (c *Client) roundTrip(t protocol.Type, body any) (protocol.Message, error) {
	if err := protocol.WriteMessage(c.conn, t, body); err != nil {
		return protocol.Message{}, err
	}
	return protocol.ReadMessage(c.conn)
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
// st, and sends it.
func (c *Client) sendPath(p string, st os.FileInfo, fi protocol.FileInfo, w io.Writer) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	now, err := f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(st, now) {
		return fmt.Errorf("%s was replaced after the job was announced", p)
	}
	return c.sendFile(f, fi, w)
}

// sendFile sends exactly the announced size of f, then its SHA-256.
func (c *Client) sendFile(f *os.File, fi protocol.FileInfo, w io.Writer) error {
	h := sha256.New()
	if _, err := xfer.Copy(w, f, fi.Size, h); err != nil {
		if errors.Is(err, xfer.ErrShort) {
			return fmt.Errorf("%s shrank while it was sent: %w", fi.Name, err)
		}
		return err
	}
	if st, err := f.Stat(); err != nil || st.Size() != fi.Size {
		return fmt.Errorf("%s changed size while it was sent", fi.Name)
	}
	return protocol.WriteMessage(c.conn, protocol.TypeFileDone, protocol.FileDone{SHA256: hex.EncodeToString(h.Sum(nil))})
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
// file's size and SHA-256, and then confirms receipt so the server can
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
		m, err := c.roundTrip(protocol.TypeFetch, protocol.JobRef{JobID: id})
		if err != nil {
			return err
		}
		if err := m.Decode(protocol.TypeResults, &res); err != nil {
			return err
		}
		out, err = c.receiveResults(id, dir, res.Files, opts.Progress)
		if err != nil {
			return err
		}
		m, err = c.roundTrip(protocol.TypeAck, protocol.JobRef{JobID: id})
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

func (c *Client) receiveResults(id, dir string, files []FileSum, progress Progress) ([]LocalFile, error) {
	var total int64
	for _, f := range files {
		if err := protocol.ValidateResultName(f.Name); err != nil {
			return nil, fmt.Errorf("server sent a bad result name: %w", err)
		}
		if f.Size < 0 || !protocol.ValidSHA256(f.SHA256) {
			return nil, fmt.Errorf("server sent a bad manifest entry for %q", f.Name)
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
	h := sha256.New()
	pw.w = xfer.NewSyncingWriter(fh)
	if _, err := xfer.Copy(pw, r, f.Size, h); err != nil {
		return fmt.Errorf("receive %s: %w", f.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("receive %s: SHA-256 mismatch (got %s, manifest says %s)", f.Name, got, f.SHA256)
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
