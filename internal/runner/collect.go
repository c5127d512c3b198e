package runner

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// Defaults and limits of CollectResults.
const (
	DefaultMaxFiles = 10_000
	DefaultMaxBytes = 64 << 30
	// MaxDepth caps how deep CollectResults descends into subfolders.
	MaxDepth = 32
	// readDirBatch is how many directory entries are read at a time.
	readDirBatch = 256
)

// ErrLimit is wrapped by the error CollectResults returns when the output
// exceeds a limit.
var ErrLimit = errors.New("result limit exceeded")

// Limits bound what CollectResults accepts. A zero field means its default.
type Limits struct {
	// MaxFiles caps the number of result files (DefaultMaxFiles). At most
	// 10×MaxFiles+1000 directory entries of any kind are examined.
	MaxFiles int
	// MaxBytes caps the total size of the result files (DefaultMaxBytes).
	MaxBytes int64
	// ValidName, if set, is an extra check of each result file's name (for
	// example the protocol's name rules); a file whose name it rejects is
	// skipped with the error as reason.
	ValidName func(name string) error
}

// ResultFile is one collected result.
type ResultFile struct {
	// Name is the file's path relative to the output dir, '/'-separated.
	Name string
	// Size is the file's length in bytes.
	Size int64
	// SHA256 is the lower-case hex SHA-256 of the file's contents.
	SHA256 string
	// BLAKE3 is the lower-case hex BLAKE3 (32 bytes) of the file's
	// contents: what a client that chose BLAKE3 checks the bytes against.
	BLAKE3 string
}

// Skipped is an entry of the output dir that is not a result.
type Skipped struct {
	// Name is the entry's path relative to the output dir, '/'-separated;
	// a name that is not valid UTF-8 or has control characters is written
	// with Go escapes (as by %q, without the quotes).
	Name string
	// Reason says why the entry was skipped.
	Reason string
}

// CollectResults walks outputDir and returns its regular files, sorted by
// name, with their sizes and SHA-256 and BLAKE3 hashes (taken in one read,
// on two cores where there are: hashBoth), and the entries it skipped,
// sorted by name.
//
// The walk goes through an os.Root, so nothing outside outputDir is read.
// Subfolders are walked (to MaxDepth), symbolically linked ones are not.
// Only regular files with one link are results: symbolic links, named pipes,
// sockets, devices, hard-linked files and names that are not valid UTF-8 or
// contain control characters are skipped with a reason. Each file is read
// once, opened without blocking and checked (with Stat on the open file) to
// be the regular file seen by Lstat, so a file swapped in during the walk is
// never read.
//
// More files or bytes than lim allows is an error wrapping ErrLimit, never a
// silent truncation; so is a file that changes while it is read. Errors name
// files relative to outputDir.
func CollectResults(outputDir string, lim Limits) ([]ResultFile, []Skipped, error) {
	if lim.MaxFiles <= 0 {
		lim.MaxFiles = DefaultMaxFiles
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	root, err := os.OpenRoot(outputDir)
	if err != nil {
		return nil, nil, fmt.Errorf("open output dir: %w", bare(err))
	}
	defer root.Close()
	c := &collector{root: root, lim: lim, maxEntries: 10*lim.MaxFiles + 1000}
	if err := c.walk(".", "", 0); err != nil {
		return nil, nil, err
	}
	slices.SortFunc(c.files, func(a, b ResultFile) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.skipped, func(a, b Skipped) int { return cmp.Compare(a.Name, b.Name) })
	return c.files, c.skipped, nil
}

type collector struct {
	root       *os.Root
	lim        Limits
	maxEntries int
	entries    int
	total      int64
	files      []ResultFile
	skipped    []Skipped
}

func (c *collector) skip(name, reason string) {
	c.skipped = append(c.skipped, Skipped{Name: name, Reason: reason})
}

// walk collects the directory dir ("." or a '/'-separated path in the
// root), whose entries are named prefix/NAME.
func (c *collector) walk(dir, prefix string, depth int) error {
	names, err := c.readDir(dir, prefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		rel := name
		if prefix != "" {
			rel = prefix + "/" + name
		}
		if reason := badName(name); reason != "" {
			c.skip(escapeName(rel), reason)
			continue
		}
		fi, err := c.root.Lstat(rel)
		if err != nil {
			return fmt.Errorf("result %q: %w", rel, bare(err))
		}
		switch mode := fi.Mode(); {
		case mode.IsRegular():
			if err := c.file(rel, fi); err != nil {
				return err
			}
		case mode.IsDir():
			if depth+1 > MaxDepth {
				return fmt.Errorf("result folder %q is nested more than %d levels deep: %w", rel, MaxDepth, ErrLimit)
			}
			if err := c.walk(rel, rel, depth+1); err != nil {
				return err
			}
		default:
			c.skip(rel, typeReason(mode))
		}
	}
	return nil
}

// readDir returns the names in dir, counting them against the entry cap.
func (c *collector) readDir(dir, prefix string) ([]string, error) {
	shown := prefix
	if shown == "" {
		shown = "."
	}
	f, err := c.root.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open result folder %q: %w", shown, bare(err))
	}
	defer f.Close()
	var names []string
	for {
		ents, err := f.ReadDir(readDirBatch)
		c.entries += len(ents)
		if c.entries > c.maxEntries {
			return nil, fmt.Errorf("output dir has more than %d entries (%d files allowed): %w", c.maxEntries, c.lim.MaxFiles, ErrLimit)
		}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read result folder %q: %w", shown, bare(err))
		}
	}
}

// file hashes the regular file rel, which Lstat described as fi.
func (c *collector) file(rel string, fi fs.FileInfo) error {
	if n := links(fi); n != 1 {
		c.skip(rel, fmt.Sprintf("hard link (%d links)", n))
		return nil
	}
	if c.lim.ValidName != nil {
		if err := c.lim.ValidName(rel); err != nil {
			c.skip(rel, err.Error())
			return nil
		}
	}
	if len(c.files)+1 > c.lim.MaxFiles {
		return fmt.Errorf("more than %d result files: %w", c.lim.MaxFiles, ErrLimit)
	}
	if fi.Size() > c.lim.MaxBytes-c.total {
		return fmt.Errorf("result files exceed %d bytes in total (at %q): %w", c.lim.MaxBytes, rel, ErrLimit)
	}
	// O_NONBLOCK: a named pipe swapped in must not block the open. The root
	// follows a symbolic link swapped in only within the output dir, and
	// the Stat below catches that.
	f, err := c.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open result %q: %w", rel, bare(err))
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat result %q: %w", rel, bare(err))
	}
	if !ofi.Mode().IsRegular() || !os.SameFile(fi, ofi) || links(ofi) != 1 {
		return fmt.Errorf("result %q was replaced while results were collected", rel)
	}
	n, sha, b3, err := hashBoth(io.LimitReader(f, ofi.Size()+1))
	if err != nil {
		return fmt.Errorf("read result %q: %w", rel, bare(err))
	}
	if n != ofi.Size() || n != fi.Size() {
		return fmt.Errorf("result %q changed while results were collected", rel)
	}
	c.total += n
	c.files = append(c.files, ResultFile{Name: rel, Size: n, SHA256: sha, BLAKE3: b3})
	return nil
}

// hashBufferSize is the size of each of hashBoth's two buffers.
const hashBufferSize = 256 << 10

// hashBoth reads r to its end and returns the number of bytes read and
// their SHA-256 and BLAKE3 in lower-case hex. The two hashes run side by
// side, SHA-256 on a goroutine of its own, over two buffers: one read,
// on two cores in the time of the slower hash.
func hashBoth(r io.Reader) (n int64, sha, b3 string, err error) {
	sh, bh := sha256.New(), blake3.New()
	toSHA := make(chan []byte)
	free := make(chan []byte, 2)
	free <- make([]byte, hashBufferSize)
	free <- make([]byte, hashBufferSize)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range toSHA {
			sh.Write(b)
			free <- b[:cap(b)]
		}
	}()
	for {
		// A buffer comes back once SHA-256 is done with it; BLAKE3 is
		// done with it once its Write below has returned.
		buf := <-free
		m, rerr := io.ReadFull(r, buf)
		if m > 0 {
			toSHA <- buf[:m]
			bh.Write(buf[:m])
			n += int64(m)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	close(toSHA)
	wg.Wait()
	return n, hex.EncodeToString(sh.Sum(nil)), hex.EncodeToString(bh.Sum(nil)), err
}

// links returns the link count of the file fi describes.
func links(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// typeReason says why an entry of this (non-regular, non-directory) mode
// is skipped.
func typeReason(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeSymlink != 0:
		return "symbolic link"
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeCharDevice != 0:
		return "character device"
	case mode&fs.ModeDevice != 0:
		return "block device"
	}
	return "not a regular file"
}

// badName says what is wrong with one path element, or "" if nothing.
func badName(name string) string {
	if !utf8.ValidString(name) {
		return "name is not valid UTF-8"
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || unicode.IsControl(r) {
			return "name contains a control character"
		}
	}
	return ""
}

// escapeName returns name as it may be shown: itself if every element is
// fine, else Go-escaped.
func escapeName(name string) string {
	if badName(name) == "" {
		return name
	}
	q := strconv.Quote(name)
	return q[1 : len(q)-1]
}

// bare strips the path from a *fs.PathError (or *os.LinkError), whose path
// would name the server's directories.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
