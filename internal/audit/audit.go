// Package audit is the server's audit trail: an append-only file of JSON
// lines, one record per security-relevant action (a session that
// authenticated, a summary of failed handshakes, a submission, a download
// and its confirmation, a cancellation, an administrator's request, a
// reload of the client keys).
//
// Each record carries the SHA-256 of the line before it (Prev), so the
// lines form a chain; the chain's head (the last record's seq, hash and
// line) is also kept in a small SQLite file in the server's state
// directory (head.go), away from the audit file. Verify walks the chain
// across every file and compares its end with the head: an edited,
// inserted or removed line, a cut-off tail and a wholly rewritten file
// all break it.
//
// Append returns only once the record is durable in both places (the
// file fsynced, the head committed); a caller performs its action after
// Append succeeds and refuses it when Append fails, so nothing happens
// unaudited. Append is safe for concurrent use; records are written one
// at a time.
//
// The log rotates itself: before a record would take the file past
// RotateBytes, the file is renamed to PATH.SEQ (SEQ: the first record's
// seq, 20 digits) and a new one begins, whose first record chains to the
// last of the renamed file.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultRotateBytes is the size past which the audit file is rotated.
const DefaultRotateBytes = 64 << 20

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit log closed")

// Options are optional settings for Open.
type Options struct {
	// RotateBytes is the size past which the file rotates (0:
	// DefaultRotateBytes).
	RotateBytes int64
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Log is an open audit log.
type Log struct {
	path   string
	log    *slog.Logger
	rotate int64
	now    func() time.Time

	mu     sync.Mutex
	f      *os.File // nil once closed
	size   int64    // of f
	first  uint64   // seq of f's first record (0: f is empty)
	head   head     // the last record written
	store  *headStore
	broken *head // the head the store must be set back to before the next record
}

// Open opens (or creates) the audit log at path with its head in the
// SQLite file headPath, and writes a start record. When the file lacks the
// last record the head holds (the server stopped between the two writes),
// it is appended from the head; a file that does not end at the head is
// logged (Verify reports where), and the chain goes on from the head.
func Open(ctx context.Context, path, headPath string, log *slog.Logger, opts Options) (_ *Log, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{path: path, log: log, rotate: opts.RotateBytes, now: opts.Now}
	if l.rotate <= 0 {
		l.rotate = DefaultRotateBytes
	}
	if l.now == nil {
		l.now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if l.store, err = openHead(ctx, headPath); err != nil {
		return nil, fmt.Errorf("audit head: %w", err)
	}
	defer func() {
		if err != nil {
			l.store.close()
		}
	}()
	if l.head, err = l.store.get(ctx); err != nil {
		return nil, fmt.Errorf("audit head: %w", err)
	}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.f.Close()
		}
	}()
	if err := l.reconcile(); err != nil {
		return nil, err
	}
	if err := l.Append(ctx, Record{Kind: KindStart}); err != nil {
		return nil, err
	}
	return l, nil
}

// openFile opens the file at l.path for appending and reads its size and
// first record's seq.
func (l *Log) openFile() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	l.f, l.size, l.first = f, st.Size(), 0
	if l.size > 0 {
		line, _ := bufio.NewReaderSize(io.NewSectionReader(f, 0, l.size), 64<<10).ReadSlice('\n')
		if r, err := Parse(bytes.TrimSuffix(line, []byte("\n"))); err == nil {
			l.first = r.Seq
		} else {
			l.first = l.head.seq + 1 // unknown: rotate it under a name after the head
		}
	}
	return nil
}

// reconcile compares the file's end (or, for an empty file, the end of
// the newest rotated file) with the head. A file that ends one record
// short of the head, or inside the head's line, is completed from the
// head; a file that does not end with a newline gets one, so the next
// record starts a line of its own.
func (l *Log) reconcile() error {
	last, complete, err := lastLine(l.f, l.size)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if l.size == 0 {
		if last, err = l.lastRotatedLine(); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
	if l.head.seq == 0 {
		if !complete {
			return l.write([]byte("\n"))
		}
		// A head lost with the state directory (or a log from before the
		// head was kept): the chain goes on from the file's last record.
		// Whoever can remove the head can rewrite it, so this is no
		// weaker; it is logged.
		if r, err := Parse(last); err == nil {
			l.log.Warn("audit head missing; the chain goes on from the audit log's last record", "path", l.path, "seq", r.Seq)
			h := head{seq: r.Seq, hash: LineHash(last), line: bytes.Clone(last)}
			if err := l.store.set(context.Background(), h); err != nil {
				return fmt.Errorf("audit head: %w", err)
			}
			l.head = h
		} else if len(last) > 0 {
			l.log.Error("audit head missing and the audit log does not end with a record; run recon admin audit --verify", "path", l.path)
		}
		return nil
	}
	headLine := l.head.line
	switch {
	case complete && bytes.Equal(last, headLine):
		return nil
	case !complete && bytes.HasPrefix(headLine, last):
		l.log.Warn("audit log ended inside its last record; completed from the audit head", "path", l.path, "seq", l.head.seq)
		return l.write(append(headLine[len(last):len(headLine):len(headLine)], '\n'))
	case complete && last != nil && l.headFollows(last):
		l.log.Warn("audit log lacked its last record; appended from the audit head", "path", l.path, "seq", l.head.seq)
		return l.write(append(slices.Clip(headLine), '\n'))
	}
	l.log.Error("audit log does not end with the audit head; run recon admin audit --verify", "path", l.path, "head_seq", l.head.seq)
	if !complete {
		return l.write([]byte("\n"))
	}
	return nil
}

// lastRotatedLine is the last line of the newest rotated file (nil when
// there is none).
func (l *Log) lastRotatedLine() ([]byte, error) {
	files, err := rotated(l.path)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	f, err := os.Open(files[len(files)-1].path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	line, _, err := lastLine(f, st.Size())
	return line, err
}

// headFollows reports whether the head's record is the one after line.
func (l *Log) headFollows(line []byte) bool {
	r, err := Parse(l.head.line)
	return err == nil && r.Prev == LineHash(line)
}

// write appends b to the file and syncs it.
func (l *Log) write(b []byte) error {
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	l.size += int64(len(b))
	return nil
}

// lastLine returns the last line of the first size bytes of f (without
// its newline), and whether it ends with a newline. An empty file has an
// empty, complete last line.
func lastLine(f *os.File, size int64) ([]byte, bool, error) {
	if size == 0 {
		return nil, true, nil
	}
	n := min(size, MaxRecordBytes+2)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil {
		return nil, false, err
	}
	complete := buf[len(buf)-1] == '\n'
	if complete {
		buf = buf[:len(buf)-1]
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return buf, complete, nil
}

// Append writes r as the next record: it sets r's Seq, Time and Prev,
// commits the new head, then appends the line and fsyncs the file. It
// returns nil only when both are durable. On an error nothing of r is
// left: the file is cut back and the head set back (or, if that fails
// too, before the next record).
func (l *Log) Append(ctx context.Context, r Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	if l.broken != nil {
		if err := l.store.set(ctx, *l.broken); err != nil {
			return fmt.Errorf("audit head: %w", err)
		}
		l.broken = nil
	}
	// The file's real end, which is where the record goes (O_APPEND) and
	// what a failed write is cut back to, whatever else changed it.
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	l.size = st.Size()
	r.Seq = l.head.seq + 1
	r.Time = l.now().UTC()
	r.Prev = l.head.hash
	if r.Prev == "" {
		r.Prev = Genesis
	}
	line, err := json.Marshal(&r)
	if err != nil {
		return fmt.Errorf("audit record: %w", err)
	}
	if len(line) > MaxRecordBytes {
		return fmt.Errorf("audit record of %d bytes, at most %d", len(line), MaxRecordBytes)
	}
	if l.size > 0 && l.size+int64(len(line))+1 > l.rotate {
		if err := l.rotateFile(); err != nil {
			return err
		}
	}
	next := head{seq: r.Seq, hash: LineHash(line), line: line}
	if err := l.store.set(ctx, next); err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	if err := l.write(append(line, '\n')); err != nil {
		// Take back what may have reached the file, then the head.
		l.f.Truncate(l.size)
		l.f.Sync()
		if serr := l.store.set(ctx, l.head); serr != nil {
			prev := l.head
			l.broken = &prev
		}
		return err
	}
	if l.first == 0 {
		l.first = r.Seq
	}
	l.head = next
	return nil
}

// rotateFile renames the file to PATH.SEQ and opens a new one.
func (l *Log) rotateFile() error {
	// Named for its first record; after the newest rotated file whatever
	// its first line says (an edited first line must not stop rotation).
	first := l.first
	if rot, err := rotated(l.path); err == nil && len(rot) > 0 && rot[len(rot)-1].first >= first {
		first = rot[len(rot)-1].first + 1
	}
	to := rotatedName(l.path, first)
	if _, err := os.Lstat(to); err == nil {
		return fmt.Errorf("audit log: rotate: %s exists", to)
	}
	if err := os.Rename(l.path, to); err != nil {
		return fmt.Errorf("audit log: rotate: %w", err)
	}
	old := l.f
	if err := l.openFile(); err != nil {
		// Go on in the renamed file: the chain stays whole.
		l.f = old
		return err
	}
	old.Close()
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		return fmt.Errorf("audit log: rotate: %w", err)
	}
	l.log.Info("audit log rotated", "path", l.path, "rotated_to", to)
	return nil
}

// Close closes the file and the head store. Safe to call more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return errors.Join(err, l.store.close())
}

// Path is the audit file's path.
func (l *Log) Path() string { return l.path }

// rotatedDigits is the width of the seq in a rotated file's name.
const rotatedDigits = 20

func rotatedName(path string, first uint64) string {
	return fmt.Sprintf("%s.%0*d", path, rotatedDigits, first)
}

type rotatedFile struct {
	path  string
	first uint64
}

// rotated lists the rotated files of path, oldest first.
func rotated(path string) ([]rotatedFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []rotatedFile
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || len(suffix) != rotatedDigits || !e.Type().IsRegular() {
			continue
		}
		n, err := strconv.ParseUint(suffix, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, rotatedFile{path: filepath.Join(dir, e.Name()), first: n})
	}
	slices.SortFunc(out, func(a, b rotatedFile) int { return cmpUint(a.first, b.first) })
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
