package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Limits of a record.
const (
	// MaxRecordBytes caps one record's line. A submission's record lists
	// its files (names, sizes, hashes), bounded by the control message
	// they came in.
	MaxRecordBytes = 8 << 20
	// MaxReloadNames caps the identities one key-reload record names as
	// added or removed.
	MaxReloadNames = 10_000
	// MaxRequestBytes caps the admin request body a record keeps.
	MaxRequestBytes = 1024
)

// Kind says what a record is about.
type Kind string

// The kinds of record.
const (
	// KindStart is written when the server opens the audit log.
	KindStart Kind = "start"
	// KindAuth is a session that proved its key (Role: client or admin).
	KindAuth Kind = "auth"
	// KindAuthFailures summarises the failed handshakes of one peer
	// address over one interval (Failures, First, Last).
	KindAuthFailures Kind = "auth_failures"
	// KindSubmit is a submission whose files were received whole (Files).
	KindSubmit Kind = "submit"
	// KindFetch is a download of a job's results (Files), written before
	// the first byte is sent.
	KindFetch Kind = "fetch"
	// KindFetchConfirmed is the client's confirmation that it holds the
	// results, after which the server deletes them.
	KindFetchConfirmed Kind = "fetch_confirmed"
	// KindCancel is a job cancelled by its owner.
	KindCancel Kind = "cancel"
	// KindAdmin is an administrator's request (Command, Request).
	KindAdmin Kind = "admin"
	// KindKeysReload is a reload of the client keys file (Added, Removed,
	// Changed: identity names, never a key; Error when it failed).
	KindKeysReload Kind = "keys_reload"
)

var kinds = map[Kind]bool{
	KindStart: true, KindAuth: true, KindAuthFailures: true, KindSubmit: true, KindFetch: true,
	KindFetchConfirmed: true, KindCancel: true, KindAdmin: true, KindKeysReload: true,
}

// File is one file of a submission or a download, with the digest that
// was verified or is to be: SHA256, BLAKE3 or both (a fetch's manifest
// when the session checks BLAKE3). A submission's files carry the digest
// the server verified them with; a confirmed fetch's carry the one the
// client verified before acknowledging.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	BLAKE3 string `json:"blake3,omitempty"`
}

// Record is one line of the audit log. Seq, Time and Prev are set by
// Log.Append.
type Record struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     Kind      `json:"kind"`
	Identity string    `json:"identity,omitempty"`
	Role     string    `json:"role,omitempty"` // of an auth record: "client" or "admin"
	Peer     string    `json:"peer,omitempty"` // address (auth_failures: IP only)
	JobID    string    `json:"job_id,omitempty"`
	Command  string    `json:"command,omitempty"` // admin request type
	// Request is an admin request's body as sent, cut to MaxRequestBytes.
	Request string   `json:"request,omitempty"`
	Files   []File   `json:"files,omitempty"`
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"` // identities whose keys changed
	// Error is why a reload failed (the previous keys stay in force).
	Error string `json:"error,omitempty"`
	// Failures, First and Last summarise failed handshakes.
	Failures int        `json:"failures,omitempty"`
	First    *time.Time `json:"first,omitempty"`
	Last     *time.Time `json:"last,omitempty"`
	// Prev is the SHA-256 (hex) of the line before this one; the first
	// record of the log has Genesis.
	Prev string `json:"prev"`
}

// Genesis is the Prev of the first record.
var Genesis = strings.Repeat("0", 2*sha256.Size)

// LineHash is the chain hash of one line (without its newline).
func LineHash(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// ParseError is a line that is not a well-formed record.
type ParseError struct{ Reason string }

func (e *ParseError) Error() string { return "not an audit record: " + e.Reason }

// Parse reads one line (without its newline) strictly: one JSON object
// of known fields, no trailing data, a known kind, a positive seq, a time,
// and a SHA-256 in Prev.
func Parse(line []byte) (*Record, error) {
	if len(line) > MaxRecordBytes {
		return nil, &ParseError{fmt.Sprintf("line of %d bytes, at most %d", len(line), MaxRecordBytes)}
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return nil, &ParseError{"newline inside the line"}
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return nil, &ParseError{err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &ParseError{"data after the record"}
	}
	switch {
	case r.Seq == 0:
		return nil, &ParseError{"no seq"}
	case r.Time.IsZero():
		return nil, &ParseError{"no time"}
	case !kinds[r.Kind]:
		return nil, &ParseError{fmt.Sprintf("unknown kind %q", truncate(string(r.Kind), 32))}
	case !isHash(r.Prev):
		return nil, &ParseError{"prev is not a SHA-256"}
	case len(r.Added) > MaxReloadNames || len(r.Removed) > MaxReloadNames || len(r.Changed) > MaxReloadNames:
		return nil, &ParseError{"too many identities"}
	}
	return &r, nil
}

func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
