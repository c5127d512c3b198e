package watch

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/recon-mri/recon/internal/protocol"
)

const (
	// readDirBatch is how many directory entries a scan reads at a time.
	readDirBatch = 256
	// minRecheck is the shortest time between two looks at the files.
	minRecheck = 10 * time.Millisecond
)

// fileState is where a file of the watched directory stands.
type fileState int

const (
	fileCandidate fileState = iota // seen; not yet unchanged for the stability delay
	fileReady                      // complete, in the open group
	fileHandled                    // in a recorded group (this size and mtime)
	fileIgnored                    // its name cannot be sent; warned about once
)

// tracked is a matching regular file of the watched directory as the
// detector last saw it.
type tracked struct {
	size  int64
	mtime time.Time
	since time.Time // when this size and mtime were first seen
	retry time.Time // an unreadable file is not looked at again before this
	state fileState
	gen   uint64 // the scan that last saw it
}

// openGroup is the group ready files are joining.
type openGroup struct {
	files      []File
	minM, maxM time.Time // range of the files' modification times
	lastJoin   time.Time // when the last file joined
}

// detector owns the view of the watched directory. It runs in one
// goroutine; nothing here is shared.
type detector struct {
	w        *Watcher
	files    map[string]*tracked // by base name
	cands    map[string]*tracked // the files in state fileCandidate
	open     *openGroup
	gen      uint64
	watching bool   // fsnotify watches the directory
	dirErr   string // the last directory error logged, to log changes only
}

// detect is the detector goroutine.
func (w *Watcher) detect(ctx context.Context) error {
	d := &detector{w: w, files: map[string]*tracked{}, cands: map[string]*tracked{}}
	var events chan fsnotify.Event
	var errs chan error
	var fw *fsnotify.Watcher
	var err error
	if w.hooks.noNotify {
		err = errors.New("turned off by a test")
	} else {
		fw, err = fsnotify.NewWatcher()
	}
	if err != nil {
		w.log.Warn("no file system notifications; relying on scans", "err", err)
	} else {
		defer fw.Close()
		events, errs = fw.Events, fw.Errors
	}
	addWatch := func() {
		if fw == nil || d.watching {
			return
		}
		if err := fw.Add(w.cfg.Dir); err != nil {
			w.log.Debug("cannot watch directory for notifications", "dir", w.cfg.Dir, "err", err)
			return
		}
		d.watching = true
	}
	addWatch()
	if err := d.scan(ctx); err != nil {
		return err
	}
	if w.hooks.detecting != nil {
		w.hooks.detecting()
	}
	poll := time.NewTicker(w.cfg.PollInterval)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, err := d.step(ctx, time.Now())
		if err != nil {
			return err
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
			if d.open != nil {
				w.log.Info("open group left unrecorded; its files will be found again at the next start",
					"files", len(d.open.files))
			}
			return nil
		case <-poll.C:
			addWatch()
			if err := d.scan(ctx); err != nil {
				return err
			}
		case <-timer.C:
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if err := d.event(ctx, ev); err != nil {
				return err
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.log.Warn("file system notification error; scanning", "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				if err := d.scan(ctx); err != nil {
					return err
				}
			}
		}
	}
}

func (d *detector) match(name string) bool {
	return matchAny(d.w.patterns, name) || d.w.cfg.DICOMRef && strings.EqualFold(filepath.Ext(name), ".dcm")
}

// scan reads the whole directory: new and changed files are observed,
// files that are gone are forgotten. An unreadable directory is logged
// (once per distinct error) and changes nothing.
func (d *detector) scan(ctx context.Context) error {
	f, err := os.Open(d.w.cfg.Dir)
	if err != nil {
		d.dirError(err)
		return nil
	}
	defer f.Close()
	d.gen++
	now := time.Now()
	for {
		ents, err := f.ReadDir(readDirBatch)
		for _, e := range ents {
			name := e.Name()
			if !d.match(name) {
				continue
			}
			info, ierr := e.Info() // lstat: a symlink is not a regular file
			if ierr != nil || !info.Mode().IsRegular() {
				continue
			}
			if err := d.observe(ctx, name, info, now); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.dirError(err)
			return nil // a partial scan: forget nothing
		}
	}
	if d.dirErr != "" {
		d.w.log.Info("watched directory readable again", "dir", d.w.cfg.Dir)
		d.dirErr = ""
	}
	for name, t := range d.files {
		if t.gen != d.gen {
			d.forget(name)
		}
	}
	return nil
}

func (d *detector) dirError(err error) {
	if msg := err.Error(); msg != d.dirErr {
		d.w.log.Error("cannot read the watched directory; will try again", "dir", d.w.cfg.Dir, "err", err)
		d.dirErr = msg
	}
}

// event handles one notification: the file it names is looked at now.
func (d *detector) event(ctx context.Context, ev fsnotify.Event) error {
	if filepath.Clean(ev.Name) == d.w.cfg.Dir {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			d.watching = false // scans carry on; the watch is set again when it can be
		}
		return nil
	}
	if filepath.Dir(ev.Name) != d.w.cfg.Dir {
		return nil
	}
	name := filepath.Base(ev.Name)
	if !d.match(name) {
		return nil
	}
	info, err := os.Lstat(ev.Name)
	if err != nil || !info.Mode().IsRegular() {
		if errors.Is(err, fs.ErrNotExist) || err == nil {
			d.forget(name)
		}
		return nil
	}
	return d.observe(ctx, name, info, time.Now())
}

// observe takes a file's current size and mtime. A new size or mtime
// starts the stability delay again; a file whose size and mtime are in a
// recorded group is handled.
func (d *detector) observe(ctx context.Context, name string, info fs.FileInfo, now time.Time) error {
	size, mtime := info.Size(), info.ModTime()
	t := d.files[name]
	if t != nil && t.size == size && t.mtime.Equal(mtime) {
		t.gen = max(t.gen, d.gen)
		return nil
	}
	if t != nil && (t.state == fileCandidate || t.state == fileIgnored) {
		// Still being written, or still unsendable: only the delay starts
		// again. (Not looked up in the state: a file that keeps changing
		// does not come back to the size and mtime of a recorded one.)
		t.size, t.mtime, t.since, t.retry, t.gen = size, mtime, now, time.Time{}, max(t.gen, d.gen)
		return nil
	}
	if t != nil && t.state == fileReady {
		d.open.remove(d.path(name))
	}
	st := fileCandidate
	known, err := d.w.state.known(ctx, d.path(name), size, mtime)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if known {
		st = fileHandled
	} else if err := protocol.ValidateFileName(name); err != nil {
		d.w.log.Warn("file name cannot be sent to the server; file ignored", "file", d.path(name), "err", err)
		st = fileIgnored
	}
	t = &tracked{size: size, mtime: mtime, since: now, state: st, gen: d.gen}
	d.files[name] = t
	if st == fileCandidate {
		d.w.log.Debug("file found", "file", d.path(name), "size", size)
		d.cands[name] = t
	} else {
		delete(d.cands, name)
	}
	return nil
}

// forget drops a file that is gone (or no longer a regular file).
func (d *detector) forget(name string) {
	t := d.files[name]
	if t == nil {
		return
	}
	if t.state == fileReady {
		d.open.remove(d.path(name))
		d.w.log.Info("file left the directory before its group closed", "file", d.path(name))
	}
	delete(d.files, name)
	delete(d.cands, name)
}

func (d *detector) path(name string) string { return filepath.Join(d.w.cfg.Dir, name) }

// step promotes candidates that stayed unchanged for the stability delay
// and can be opened, lets them join groups, closes the open group when the
// grouping timeout has passed since its last file, and returns when it
// needs to run again.
func (d *detector) step(ctx context.Context, now time.Time) (time.Time, error) {
	cfg := &d.w.cfg
	var ready []File
	for name, t := range d.cands {
		if now.Sub(t.since) < cfg.StabilityDelay || now.Before(t.retry) {
			continue
		}
		info, err := statReadable(d.path(name), d.w.hooks.openFile)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular):
			d.forget(name)
		case err != nil:
			// Not readable (yet): look again after the next scan.
			d.w.log.Debug("complete file cannot be opened yet", "file", d.path(name), "err", err)
			t.retry = now.Add(cfg.PollInterval)
		case info.Size() != t.size || !info.ModTime().Equal(t.mtime):
			t.size, t.mtime, t.since = info.Size(), info.ModTime(), now
		default:
			// The time of this record is when the file was judged complete.
			d.w.log.Debug("file complete", "file", d.path(name), "size", t.size)
			ready = append(ready, File{Path: d.path(name), Size: t.size, ModTime: t.mtime})
		}
	}
	// Files found complete together join in the order they were written,
	// so a backlog (files written while the daemon was not running) splits
	// where their modification times are further apart than the timeout.
	slices.SortFunc(ready, func(a, b File) int {
		if c := a.ModTime.Compare(b.ModTime); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	for _, f := range ready {
		if d.open != nil && (len(d.open.files) >= MaxGroupFiles || !d.open.near(f.ModTime, cfg.GroupingTimeout)) {
			if err := d.close(ctx, now); err != nil {
				return now, err
			}
		}
		if d.open == nil {
			d.open = &openGroup{minM: f.ModTime, maxM: f.ModTime}
		}
		d.open.add(f)
		d.open.lastJoin = now
		name := filepath.Base(f.Path)
		d.files[name].state = fileReady
		delete(d.cands, name)
	}
	if d.open != nil && (now.Sub(d.open.lastJoin) >= cfg.GroupingTimeout || len(d.open.files) >= MaxGroupFiles) {
		if err := d.close(ctx, now); err != nil {
			return now, err
		}
	}
	next := now.Add(time.Hour)
	for _, t := range d.cands {
		due := t.since.Add(cfg.StabilityDelay)
		if t.retry.After(due) {
			due = t.retry
		}
		next = minTime(next, due)
	}
	if d.open != nil {
		next = minTime(next, d.open.lastJoin.Add(cfg.GroupingTimeout))
	}
	// With a zero delay a file that keeps changing is looked at again at
	// once; this keeps that from spinning.
	if earliest := now.Add(minRecheck); next.Before(earliest) {
		next = earliest
	}
	return next, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// close records the open group as pending and hands it to the submitter.
func (d *detector) close(ctx context.Context, now time.Time) error {
	g := d.open
	if g == nil || len(g.files) == 0 {
		d.open = nil
		return nil
	}
	first := filepath.Base(g.files[0].Path)
	name := now.Local().Format("20060102-150405") + "_" + sanitize(first)
	rec, err := d.w.state.addGroup(ctx, name, g.files, now)
	if err != nil {
		return err
	}
	d.open = nil
	var bytes int64
	names := make([]string, 0, len(g.files))
	for _, f := range g.files {
		if t := d.files[filepath.Base(f.Path)]; t != nil {
			t.state = fileHandled
		}
		bytes += f.Size
		if len(names) < 20 {
			names = append(names, filepath.Base(f.Path))
		}
	}
	d.w.log.Info("group detected", "group", rec.Name, "files", len(g.files), "bytes", bytes, "names", names)
	kick(d.w.submitKick)
	return nil
}

// near reports whether a file modified at m belongs with the group's files:
// its mtime is within the timeout of theirs.
func (g *openGroup) near(m time.Time, timeout time.Duration) bool {
	return !m.Before(g.minM.Add(-timeout)) && !m.After(g.maxM.Add(timeout))
}

func (g *openGroup) add(f File) {
	g.files = append(g.files, f)
	g.minM = minTime(g.minM, f.ModTime)
	if f.ModTime.After(g.maxM) {
		g.maxM = f.ModTime
	}
}

func (g *openGroup) remove(path string) {
	if g == nil {
		return
	}
	g.files = slices.DeleteFunc(g.files, func(f File) bool { return f.Path == path })
}

// sanitize makes a file name fit for a directory name: letters, digits and
// . _ - kept, anything else an underscore, at most 64 bytes.
func sanitize(name string) string {
	b := []byte(name)
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	s := strings.Trim(string(b), ".")
	if s == "" {
		s = "group"
	}
	return s
}

var errNotRegular = errors.New("not a regular file")

// statReadable opens the file for reading (without blocking or following
// a symlink's replacement into a FIFO) and returns its state. open, when
// not nil, replaces the open (tests).
func statReadable(path string, open func(string) (*os.File, error)) (fs.FileInfo, error) {
	if info, err := os.Lstat(path); err != nil {
		return nil, err
	} else if !info.Mode().IsRegular() {
		return nil, errNotRegular
	}
	if open == nil {
		open = openNoBlock
	}
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, errNotRegular
	}
	return info, nil
}
