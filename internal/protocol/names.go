package protocol

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// reservedWindows are device names Windows reserves, with or without an
// extension. A client on Windows could not write them, and some shares
// misbehave on them, so recon refuses them everywhere.
var reservedWindows = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true,
	"COM1": true, "COM2": true, "COM3": true, "COM4": true, "COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true, "LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
	"COM¹": true, "COM²": true, "COM³": true, "LPT¹": true, "LPT²": true, "LPT³": true,
}

// windowsReserved are the characters besides '/', '\\' and ':' that
// Windows refuses in file names.
const windowsReserved = `<>"|?*`

// ValidateFileName checks one file name that came from the network: a base
// name only (no '/', '\\' or ':'), none of the other characters Windows
// refuses (< > " | ? *), not "." or "..", valid UTF-8 without
// control or invisible formatting characters, no leading or trailing space,
// no trailing dot, not a reserved Windows device name, at most MaxNameLen
// bytes. A valid name is safe to use as one path element.
func ValidateFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty file name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("file name %q is %d bytes, at most %d", truncate(name, 40), len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("file name %q is not allowed", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("file name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		switch {
		case r == '/' || r == '\\' || r == ':':
			return fmt.Errorf("file name %q contains %q: only plain file names are allowed", name, r)
		case strings.ContainsRune(windowsReserved, r):
			// A client on Windows could not write it: the whole fetch
			// would fail there.
			return fmt.Errorf("file name %q contains %q, which Windows does not allow in file names", name, r)
		case r < 0x20 || r == 0x7f || unicode.IsControl(r):
			return fmt.Errorf("file name %q contains a control character", name)
		case unicode.Is(unicode.Cf, r):
			// Bidi overrides, zero-width characters and the like make a
			// name read as something it is not.
			return fmt.Errorf("file name %q contains an invisible formatting character (%U)", name, r)
		}
	}
	if strings.TrimSpace(name) != name {
		return fmt.Errorf("file name %q starts or ends with white space", name)
	}
	if strings.HasSuffix(name, ".") {
		return fmt.Errorf("file name %q ends with a dot", name)
	}
	stem, _, _ := strings.Cut(name, ".")
	if reservedWindows[strings.ToUpper(strings.TrimSpace(stem))] {
		return fmt.Errorf("file name %q is a reserved device name", name)
	}
	if !filepath.IsLocal(name) {
		return fmt.Errorf("file name %q is not a local name", name)
	}
	return nil
}

// ValidateResultName checks a result file's relative path: '/'-separated
// elements, each valid by ValidateFileName, at most MaxResultNameLen bytes.
func ValidateResultName(name string) error {
	if name == "" {
		return fmt.Errorf("empty result name")
	}
	if len(name) > MaxResultNameLen {
		return fmt.Errorf("result name %q is %d bytes, at most %d", truncate(name, 40), len(name), MaxResultNameLen)
	}
	for _, el := range strings.Split(name, "/") {
		if err := ValidateFileName(el); err != nil {
			return fmt.Errorf("result name %q: %w", truncate(name, 80), err)
		}
	}
	return nil
}

// FoldName returns the key under which two names count as the same file on
// some file system a client may use: names that differ only in case (NTFS,
// APFS, SMB shares), in Unicode normalisation (HFS+ stores names
// decomposed, so "é" precomposed and "e" + U+0301 are one file there), or
// in compatibility forms ("ﬁ" and "fi"). It is NFKC applied to the
// case-folded NFKC form, close to Unicode's NFKC_Casefold: it may call
// more names the same than any one file system does, which only refuses a
// confusing job, never merges two files.
func FoldName(name string) string {
	return norm.NFKC.String(cases.Fold().String(norm.NFKC.String(name)))
}
