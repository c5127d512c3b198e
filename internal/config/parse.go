package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on the files Parse accepts. A config file is small and written by
// hand; anything beyond these is refused, never truncated.
const (
	// MaxFileSize is the largest config file read, in bytes.
	MaxFileSize = 1 << 20
	// MaxLineLen is the longest line accepted, in bytes, without its newline.
	MaxLineLen = 4096
	// MaxKeyLen is the longest key name accepted. The longest real key has
	// 32 characters; a 44-character Fernet key pasted by mistake in front of
	// an '=' is longer, so it is refused without being echoed.
	MaxKeyLen = 40
	// maxErrors bounds the syntax errors collected from one file.
	maxErrors = 10
)

// Kind is the type a value's text is inferred to have, as the Python
// prototype did: bool, int, or else string.
type Kind int

// The kinds of value.
const (
	KindString Kind = iota
	KindInt
	KindBool
)

func (k Kind) String() string {
	switch k {
	case KindInt:
		return "int"
	case KindBool:
		return "bool"
	}
	return "string"
}

// Entry is one ITEM = VALUE pair of a config file.
type Entry struct {
	Key   string // upper case
	Value string // trimmed, surrounding quotes removed
	Kind  Kind   // inferred from an unquoted value; a quoted value is a string
	Line  int    // 1-based
}

// ParseError is an error in a config file, at a line (0 when it concerns the
// whole file, such as a missing required key).
type ParseError struct {
	File string
	Line int
	Msg  string
	Err  error // underlying error, if any (for errors.Is), already described by Msg
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// Parse reads ITEM = VALUE lines from r; name is the file name used in
// errors. The rules:
//
//   - one pair per line, split at the first '='; key and value are trimmed and
//     the key is upper-cased (keys are case-insensitive); a key has letters,
//     digits and '_' only;
//   - a value in matching quotes ("…" or '…') is taken literally, as a
//     string; the quotes are removed;
//   - '#' starts a comment on its own line, or after a value when outside
//     quotes; blank lines are ignored; an empty value is the empty string;
//   - an unquoted value is a bool (true/false, any case), an int (decimal),
//     or a string.
//
// A line without '=', an empty or malformed key, an unterminated quote, a
// duplicate key, control characters, invalid UTF-8, a line longer than
// MaxLineLen or a file larger than MaxFileSize are errors. Errors are
// *ParseError values (several are joined with errors.Join) and never contain
// a value.
func Parse(name string, r io.Reader) ([]Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, &ParseError{File: name, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}
	}
	return parseData(name, data)
}

func parseData(name string, data []byte) ([]Entry, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var (
		entries []Entry
		errs    []error
		seen    = map[string]int{}
	)
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &ParseError{File: name, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	for n := 1; len(data) > 0 && len(errs) < maxErrors; n++ {
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		if len(raw) > MaxLineLen {
			fail(n, "line is longer than %d bytes", MaxLineLen)
			continue
		}
		if msg := checkText(raw); msg != "" {
			fail(n, "%s", msg)
			continue
		}
		e, msg, ok := parseLine(string(raw))
		if msg != "" {
			fail(n, "%s", msg)
			continue
		}
		if !ok {
			continue
		}
		if first, dup := seen[e.Key]; dup {
			fail(n, "duplicate key %s (first set on line %d)", e.Key, first)
			continue
		}
		seen[e.Key] = n
		e.Line = n
		entries = append(entries, e)
	}
	if len(errs) == maxErrors && len(data) > 0 {
		errs = append(errs, &ParseError{File: name, Msg: "too many errors; stopped"})
	}
	switch len(errs) {
	case 0:
		return entries, nil
	case 1:
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// checkText refuses invalid UTF-8 and control characters other than tab.
func checkText(b []byte) string {
	if !utf8.Valid(b) {
		return "line is not valid UTF-8"
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return "line contains a control character"
		}
	}
	return ""
}

// parseLine parses one line. ok is false for a blank or comment line; msg is
// set for a malformed one.
func parseLine(line string) (e Entry, msg string, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return Entry{}, "", false
	}
	i := strings.IndexAny(line, "=#")
	if i < 0 || line[i] == '#' {
		return Entry{}, "missing '=': want ITEM = VALUE", false
	}
	key := strings.TrimSpace(line[:i])
	if msg := checkKey(key); msg != "" {
		return Entry{}, msg, false
	}
	key = strings.ToUpper(key)
	rest := strings.TrimSpace(line[i+1:])
	if rest != "" && (rest[0] == '"' || rest[0] == '\'') {
		q := rest[0]
		j := strings.IndexByte(rest[1:], q)
		if j < 0 {
			return Entry{}, fmt.Sprintf("unterminated quote in the value of %s", key), false
		}
		after := strings.TrimSpace(rest[j+2:])
		if after != "" && after[0] != '#' {
			return Entry{}, fmt.Sprintf("text after the closing quote in the value of %s", key), false
		}
		return Entry{Key: key, Value: rest[1 : j+1], Kind: KindString}, "", true
	}
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest = strings.TrimSpace(rest[:j])
	}
	return Entry{Key: key, Value: rest, Kind: inferKind(rest)}, "", true
}

// checkKey validates a key name. Its messages never contain the name: a
// malformed name may be a pasted key.
func checkKey(key string) string {
	if key == "" {
		return "empty key before '='"
	}
	if len(key) > MaxKeyLen {
		return fmt.Sprintf("key name is longer than %d characters", MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return "malformed key name: want a letter or '_' followed by letters, digits and '_'"
		}
	}
	return ""
}

// inferKind types an unquoted value as the prototype did.
func inferKind(v string) Kind {
	if strings.EqualFold(v, "true") || strings.EqualFold(v, "false") {
		return KindBool
	}
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return KindInt
	}
	return KindString
}

// format writes entries in canonical form, one `KEY = VALUE` per line, so
// that parsing the result gives the same keys, values and kinds. It fails
// for an entry that no line can express.
func format(entries []Entry) ([]byte, error) {
	var b bytes.Buffer
	for _, e := range entries {
		line, err := formatEntry(e)
		if err != nil {
			return nil, err
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func formatEntry(e Entry) (string, error) {
	if msg := checkKey(e.Key); msg != "" || strings.ToUpper(e.Key) != e.Key {
		return "", fmt.Errorf("cannot write key: %s", msg)
	}
	if msg := checkText([]byte(e.Value)); msg != "" {
		return "", fmt.Errorf("cannot write value of %s: %s", e.Key, msg)
	}
	v := e.Value
	if v == "" {
		if e.Kind != KindString {
			return "", fmt.Errorf("cannot write value of %s: empty %s", e.Key, e.Kind)
		}
		return e.Key + " =", nil
	}
	if inferKind(v) != e.Kind && e.Kind != KindString {
		return "", fmt.Errorf("cannot write value of %s: not a %s", e.Key, e.Kind)
	}
	needQuote := strings.TrimSpace(v) != v || strings.ContainsRune(v, '#') ||
		v[0] == '"' || v[0] == '\'' || inferKind(v) != e.Kind
	if !needQuote {
		return e.Key + " = " + v, nil
	}
	switch {
	case !strings.ContainsRune(v, '"'):
		return e.Key + ` = "` + v + `"`, nil
	case !strings.ContainsRune(v, '\''):
		return e.Key + " = '" + v + "'", nil
	}
	return "", fmt.Errorf("cannot write value of %s: needs quotes but contains both kinds", e.Key)
}
