package client

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// SubmissionFile is what a derived submission id covers of one file.
type SubmissionFile struct {
	Path    string // as given, or absolute: the caller's choice, kept the same between runs
	Size    int64
	ModTime time.Time
	SHA256  string // optional: "" when the caller does not hash the file
}

// DeriveSubmissionID names a submission after what it submits: prefix,
// then the SHA-256 of the files' paths, sizes, modification times and
// (when given) SHA-256 sums, in path order, and of the options. Submitting
// the same files with the same options again gives the same id, so the
// server resumes the upload it kept or returns the job it already made;
// another file, a changed file or another option gives another id. The
// id is at most len(prefix)+65 characters of the set the server accepts
// when prefix is.
//
// With no options, the id is the one recon watch has always derived, so a
// watch daemon's state stays valid across the move of this function.
func DeriveSubmissionID(prefix string, files []SubmissionFile, options map[string]string) string {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b SubmissionFile) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, f := range sorted {
		// A path holds no NUL, so the fields cannot run into each other.
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00", f.Path, f.Size, f.ModTime.UnixNano(), f.SHA256)
	}
	if len(options) > 0 {
		keys := make([]string, 0, len(options))
		for k := range options {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		// A second NUL ends the files: no path is empty.
		h.Write([]byte("\x00options\x00"))
		for _, k := range keys {
			fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(options[k]), options[k])
		}
	}
	return prefix + "-" + hex.EncodeToString(h.Sum(nil))
}

// SubmissionIDFor derives the submission id of paths with options, as
// recon submit does by default (see DeriveSubmissionID): from each file's
// absolute path, size and modification time, without reading it.
func SubmissionIDFor(paths []string, options map[string]string) (string, error) {
	files := make([]SubmissionFile, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", &localError{err}
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", &localError{err}
		}
		files = append(files, SubmissionFile{Path: abs, Size: st.Size(), ModTime: st.ModTime()})
	}
	return DeriveSubmissionID("cli", files, options), nil
}

// NewSubmissionID returns a fresh random submission id, "c-" and 32 hex
// digits: the id of a submission that is new whatever its files (Submit's
// default, recon submit --new).
func NewSubmissionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "c-" + hex.EncodeToString(b)
}
