// Package protocol defines the messages recon's programs exchange inside the
// secure channel, their limits and error codes, and the file-stream
// sub-protocol.
//
// A session is a sequence of requests. Every control message is framed as a
// 4-byte big-endian length followed by that many bytes of JSON, an envelope
// {"type": T, "body": {...}} whose body is decoded strictly: unknown fields,
// trailing data and oversized messages are errors. File contents travel raw
// between control messages: a sender announces each file's size first, then
// writes exactly that many bytes, then a FileDone message carrying the
// SHA-256 it computed while sending. The channel below authenticates every
// byte, so the hash checks the ends (disk to disk), not the wire.
package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/recon-mri/recon/internal/options"
)

// Version is the protocol version spoken inside the channel. Version 2
// added client identities: the cancel and act_as requests, identities on
// jobs and workers, and the key id of the channel's preamble. Version 3
// added the hello request, by which a session chooses its end-to-end hash
// (hash.go); the channel itself (package secure) is unchanged.
const Version = 3

// Limits on what a peer may send. They are checked before anything is
// allocated or stored.
const (
	// MaxMessageSize caps one control message, in JSON bytes. It is large
	// because a job's file lists travel in one message (the submission, the
	// job, the result manifest); each list is capped at MaxFileListBytes, so
	// that a job (two lists) and a result manifest (three) always fit.
	// ReadMessage allocates as the bytes arrive, not by the announced length.
	MaxMessageSize = 16 << 20
	// MaxFileListBytes caps one file list of a job (its inputs, its
	// results) as JSON, with every SHA-256 filled in: FileListSize.
	MaxFileListBytes = 4 << 20
	// MaxJSONDepth caps the nesting of arrays and objects in a control
	// message; recon's messages nest at most five levels.
	MaxJSONDepth     = 16
	MaxNameLen       = 255     // bytes, one path element
	MaxResultNameLen = 1024    // bytes, a result path with '/' separators
	MaxFilesAbsolute = 100_000 // hard cap on files in one message, whatever the config says
	SHA256HexLen     = 64
	MaxSubmissionID  = 128

	// The limits of a job's options are those of package options, which
	// the runner enforces too; the protocol adds a cap on their total.
	MaxOptions      = options.MaxCount
	MaxOptionKeyLen = options.MaxKeyLen
	MaxOptionValue  = options.MaxValueBytes // bytes
	MaxOptionsTotal = 32 << 10              // bytes of all keys and values together (they become environment variables)
)

// Type names a control message.
type Type string

// Message types. Requests go from client to server; each has its replies.
const (
	// Any request may be answered with TypeError.
	TypeError Type = "error"

	TypeStatus      Type = "status" // → TypeStatusReply
	TypeStatusReply Type = "status_reply"

	TypeJobStatus Type = "job_status" // → TypeJob
	TypeJob       Type = "job"

	TypeQueue      Type = "queue" // → TypeQueueReply
	TypeQueueReply Type = "queue_reply"

	// Submit: TypeSubmit → TypeSubmitReady, then per file: raw bytes then
	// TypeFileDone; → TypeJob once every file is verified and the job is
	// committed.
	TypeSubmit      Type = "submit"
	TypeSubmitReady Type = "submit_ready"
	TypeFileDone    Type = "file_done"

	// Wait: TypeWait → TypeEvent... until an event with a terminal state.
	TypeWait  Type = "wait"
	TypeEvent Type = "event"

	// Fetch: TypeFetch → TypeResults, then each file's raw bytes in manifest
	// order; the client answers TypeAck once every file is verified and
	// stored, and the server replies TypeAckDone.
	TypeFetch   Type = "fetch"
	TypeResults Type = "results"
	TypeAck     Type = "ack"
	TypeAckDone Type = "ack_done"

	// Cancel: the owner cancels its own job (JobRef → CancelReply).
	TypeCancel      Type = "cancel"
	TypeCancelReply Type = "cancel_reply"

	// ActAs, from a relay only (a session authenticated with the server's
	// RELAY_SHARED_KEY), names the client identity the rest of the
	// session acts for. It has no reply; a refused one is answered with
	// TypeError and the session ends. It is allowed once, first.
	TypeActAs Type = "act_as"

	// Hello (version 3): the client offers the end-to-end hashes it can
	// compute and the server chooses the session's (Hello → HelloReply).
	// At most once, before the session's first submit or fetch.
	TypeHello      Type = "hello"
	TypeHelloReply Type = "hello_reply"
)

// ActAs is the body of TypeActAs.
type ActAs struct {
	Identity string `json:"identity"`
}

// Code is a stable error code carried on the wire.
type Code string

// Error codes.
const (
	CodeBadRequest   Code = "bad_request"
	CodeNotFound     Code = "not_found"
	CodeInvalidName  Code = "invalid_name"
	CodeTooLarge     Code = "too_large"
	CodeNoSpace      Code = "no_space"
	CodeQueueFull    Code = "queue_full"
	CodeHashMismatch Code = "hash_mismatch"
	CodeNotFinished  Code = "not_finished"
	CodeGone         Code = "gone"
	CodeConflict     Code = "conflict"
	CodeUnavailable  Code = "unavailable"
	CodeTimeout      Code = "timeout" // a transfer stalled or was too slow
	CodeInternal     Code = "internal"
)

// Error is an error that crosses the wire: a stable code and a human
// message, never a stack trace or a server path.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds a wire error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is a wire error with the given code.
func IsCode(err error, code Code) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.Code == code
}

// FileInfo announces an input file.
type FileInfo struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// FileSum describes a stored file: name, size and SHA-256 (lower-case hex).
//
// An input file uploaded in a session that checked it with BLAKE3 has no
// SHA-256: SHA256 is empty (absent on the wire). A result always has its
// SHA-256. BLAKE3 is set only in the results manifest of a fetch whose
// session chose BLAKE3 (and only for results the server took the BLAKE3
// of): the client then checks the bytes against it instead.
type FileSum struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	BLAKE3 string `json:"blake3,omitempty"`
}

// Submit starts a job submission.
type Submit struct {
	SubmissionID string            `json:"submission_id,omitempty"`
	Files        []FileInfo        `json:"files"`
	Options      map[string]string `json:"options,omitempty"`
}

// SubmitReady tells the client to send the files. Existing is set when the
// submission id names a job the server already has: then no file is sent
// and Job describes it.
//
// Resume is set when the server kept an earlier, broken upload of the same
// submission: for each announced file, the number of its first bytes the
// server holds. The client then sends, per file, only the bytes from that
// offset on, followed as always by the FileDone with the SHA-256 of the
// whole file (a file the server holds whole gets no bytes, only its
// FileDone). Without Resume every file is sent whole.
type SubmitReady struct {
	Existing bool     `json:"existing,omitempty"`
	Job      *JobInfo `json:"job,omitempty"`
	Resume   []int64  `json:"resume,omitempty"`
	// Note, if set, is for the client's user: why the upload goes as it
	// does (e.g. that a kept upload was removed, and every file is sent
	// again).
	Note string `json:"note,omitempty"`
}

// CheckResume checks the resume offsets of a SubmitReady against the files
// announced: one per file, each from 0 to the file's size.
func CheckResume(resume []int64, files []FileInfo) error {
	if resume == nil {
		return nil
	}
	if len(resume) != len(files) {
		return fmt.Errorf("resume offsets for %d files, %d announced", len(resume), len(files))
	}
	for i, o := range resume {
		if o < 0 || o > files[i].Size {
			return fmt.Errorf("resume offset %d for file %q of %d bytes", o, files[i].Name, files[i].Size)
		}
	}
	return nil
}

// FileDone ends one file's bytes with the digest of the whole file under
// the session's hash: exactly one of the fields is set (Digest).
type FileDone struct {
	SHA256 string `json:"sha256,omitempty"`
	BLAKE3 string `json:"blake3,omitempty"`
}

// JobRef names a job.
type JobRef struct {
	JobID string `json:"job_id"`
}

// Empty is the body of requests without arguments.
type Empty struct{}

// JobState is the state of a job on the wire.
type JobState string

// The states of a job. Queued and running jobs have not ended; the others
// are terminal. They are the server's store states (jobs.State), spelled
// the same: the server converts one to the other and a test of the server
// pins them together (this package does not import the store).
const (
	StateQueued    JobState = "queued"
	StateRunning   JobState = "running"
	StateSucceeded JobState = "succeeded"
	StateFailed    JobState = "failed"
	StateCancelled JobState = "cancelled"
)

// JobStates returns the states of a job, in the order a job goes through
// them.
func JobStates() []JobState {
	return []JobState{StateQueued, StateRunning, StateSucceeded, StateFailed, StateCancelled}
}

// Terminal reports whether s is a final state (succeeded, failed or
// cancelled).
func (s JobState) Terminal() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled
}

// JobInfo is a job as clients see it.
type JobInfo struct {
	JobID    string   `json:"job_id"`
	State    JobState `json:"state"`
	Position int      `json:"position,omitempty"` // in the queue, 1-based, when queued
	// WaitReason says, of a queued job, why it is not starting yet
	// ("workers paused, CPU load 86% > 75%", "all 2 workers busy"); ""
	// when a worker is free to take it.
	WaitReason   string            `json:"wait_reason,omitempty"`
	SubmittedAt  time.Time         `json:"submitted_at"`
	StartedAt    *time.Time        `json:"started_at,omitempty"`
	FinishedAt   *time.Time        `json:"finished_at,omitempty"`
	Files        []FileSum         `json:"files"`
	Options      map[string]string `json:"options,omitempty"`
	Attempts     int               `json:"attempts"`
	ExitCode     *int              `json:"exit_code,omitempty"`
	Error        string            `json:"error,omitempty"`
	Results      []FileSum         `json:"results,omitempty"`
	Delivered    bool              `json:"delivered,omitempty"`
	ResultsGone  bool              `json:"results_gone,omitempty"`
	ClientAddr   string            `json:"client_addr,omitempty"`
	SubmissionID string            `json:"submission_id,omitempty"`
	// Identity is the client identity that owns the job.
	Identity string `json:"identity,omitempty"`
	// Backend is set by a relay: the address of the server holding the job.
	Backend string `json:"backend,omitempty"`
	// Delivery is the job's delivery to a PACS, when it has one.
	Delivery *Delivery `json:"delivery,omitempty"`
	// Detail says where a running job is when an executor outside the
	// server holds it, e.g. "pending in Slurm: Resources".
	Detail string `json:"detail,omitempty"`
}

// Terminal reports whether the job has ended.
func (j *JobInfo) Terminal() bool { return j.State.Terminal() }

// Event is a job state change sent to a waiting client.
type Event struct {
	Job JobInfo `json:"job"`
}

// StatusReply describes the server.
type StatusReply struct {
	Version       string           `json:"version"`
	Protocol      int              `json:"protocol"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	StartedAt     time.Time        `json:"started_at"`
	Jobs          map[JobState]int `json:"jobs"` // by state
	MaxWorkers    int              `json:"max_workers"`
	// RelaySession is set for a session authenticated with the server's
	// RELAY_SHARED_KEY: it may send ActAs.
	RelaySession bool `json:"relay_session,omitempty"`
}

// QueueReply lists jobs.
type QueueReply struct {
	Jobs []JobInfo `json:"jobs"`
	// Unavailable is set by a relay: the backends whose jobs are missing
	// from Jobs because they are down.
	Unavailable []string `json:"unavailable,omitempty"`
}

// Results announces the result files of a finished job, sent in this order.
type Results struct {
	Job   JobInfo   `json:"job"`
	Files []FileSum `json:"files"`
}

// envelope is the framing of every control message.
type envelope struct {
	Type Type            `json:"type"`
	Body json.RawMessage `json:"body,omitempty"`
}

// ErrMessageTooLarge is returned for a control message over MaxMessageSize.
var ErrMessageTooLarge = errors.New("control message too large")

// ErrBadMessage is wrapped by ReadMessage's error for a control message
// that arrived whole but is not valid: a zero length, JSON that is
// malformed, has unknown or duplicate fields, nests too deep, has trailing
// data, or an envelope without a type. The peer broke the protocol; the
// stream is still in step, so it can be told so.
var ErrBadMessage = errors.New("bad control message")

// WriteMessage sends one control message in a single Write.
func WriteMessage(w io.Writer, t Type, body any) error {
	var raw json.RawMessage
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s message: %w", t, err)
		}
		raw = b
	}
	b, err := json.Marshal(envelope{Type: t, Body: raw})
	if err != nil {
		return fmt.Errorf("encode %s message: %w", t, err)
	}
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%s message: %w (%d bytes)", t, ErrMessageTooLarge, len(b))
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// WriteError sends a wire error.
func WriteError(w io.Writer, e *Error) error {
	return WriteMessage(w, TypeError, e)
}

// Message is a received control message whose body is not yet decoded.
type Message struct {
	Type Type
	Body json.RawMessage
	hold *hold // its share of a Budget, if read under one
}

// ReadMessage reads one control message. The length is checked before
// anything is allocated, and the buffer grows only as bytes arrive, so a
// peer that announces a large message and sends little costs little.
// A server reads under a Budget instead (Budget.ReadMessage).
func ReadMessage(r io.Reader) (Message, error) {
	n, err := readLength(r)
	if err != nil {
		return Message{}, err
	}
	b, err := readN(r, n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	return parseMessage(b)
}

// readLength reads and checks a control message's length.
func readLength(r io.Reader) (int, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, fmt.Errorf("%w: zero length", ErrBadMessage)
	}
	if n > MaxMessageSize {
		return 0, fmt.Errorf("%w (%d bytes, at most %d)", ErrMessageTooLarge, n, MaxMessageSize)
	}
	return int(n), nil
}

// parseMessage checks a control message's JSON and splits its envelope.
// The body is a slice of b, not a copy.
func parseMessage(b []byte) (Message, error) {
	// checkJSON refuses keys of the envelope other than its two, which
	// json.Unmarshal would ignore.
	if err := checkJSON(b, "TYPE", "BODY"); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	var env struct {
		Type Type    `json:"type"`
		Body rawBody `json:"body"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if env.Type == "" {
		return Message{}, fmt.Errorf("%w: no type", ErrBadMessage)
	}
	return Message{Type: env.Type, Body: json.RawMessage(env.Body)}, nil
}

// rawBody is a JSON value kept as the slice of the message it was read
// from: json.RawMessage would copy it.
type rawBody []byte

func (r *rawBody) UnmarshalJSON(b []byte) error {
	*r = b // a slice of parseMessage's buffer, which nothing changes
	return nil
}

// readChunk is how much readN allocates ahead of the bytes it has read.
const readChunk = 64 << 10

// readN reads exactly n bytes, growing its buffer as they arrive.
func readN(r io.Reader, n int) ([]byte, error) {
	if n <= readChunk {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, readChunk)
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(cap(b), n-len(b)))
		}
		k, err := io.ReadFull(r, b[len(b):min(cap(b), n)])
		b = b[:len(b)+k]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// checkJSON walks one JSON document and refuses what encoding/json would
// let through: an object with two keys that name the same field (it keeps
// the last, and matches names without regard to case, so "files" and
// "FILES" are the same key), nesting deeper than MaxJSONDepth, an object
// of more than MaxJSONKeys keys or an array of more than MaxJSONElements
// elements (the decoded value could take several times the message's
// size), and strings that are not valid Unicode (checkString). With top
// set, the top-level object may only have those keys (folded as by
// foldKey). Anything else malformed is left to the decoder, which reports
// it: on bytes that are not JSON, checkJSON stops and returns nil.
//
// It allocates little, whatever the message: the keys of each open
// object are kept folded in a buffer reused from one object to the next.
func checkJSON(b []byte, top ...string) error {
	var stack []jsonLevel
	var folded []byte  // the current key, folded
	expectKey := false // the next string in the current object is a key
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case ',':
			if len(stack) > 0 {
				l := &stack[len(stack)-1]
				expectKey = l.object
				if !l.object {
					if l.n++; l.n >= MaxJSONElements {
						return fmt.Errorf("an array of more than %d elements", MaxJSONElements)
					}
				}
			}
			i++
		case '{', '[':
			if len(stack) >= MaxJSONDepth {
				return fmt.Errorf("nested more than %d levels deep", MaxJSONDepth)
			}
			if len(stack) < cap(stack) {
				stack = stack[:len(stack)+1]
			} else {
				stack = append(stack, jsonLevel{})
			}
			stack[len(stack)-1].reset(c == '{')
			expectKey = c == '{'
			i++
		case '}', ']':
			if len(stack) == 0 {
				return nil
			}
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case '"':
			end := i + 1
			escaped := false
			for end < len(b) && b[end] != '"' {
				if b[end] == '\\' {
					escaped = true
					end++
				}
				end++
			}
			if end >= len(b) {
				return nil
			}
			if err := checkString(b[i+1:end], escaped); err != nil {
				return err
			}
			if expectKey && len(stack) > 0 {
				raw := b[i+1 : end]
				key := ""
				if escaped {
					if json.Unmarshal(b[i:end+1], &key) != nil {
						return nil
					}
					raw = []byte(key)
				}
				folded = appendFoldKey(folded[:0], raw)
				if top != nil && len(stack) == 1 && !slices.Contains(top, string(folded)) {
					return fmt.Errorf("unknown field %q", truncate(string(raw), 40))
				}
				if err := stack[len(stack)-1].add(folded); err != nil {
					if errors.Is(err, errDuplicateKey) {
						return fmt.Errorf("%w %q", err, truncate(string(raw), 40))
					}
					return err
				}
				expectKey = false
			}
			i = end + 1
		default:
			i++ // a number, true, false, null - or not JSON
		}
	}
	return nil
}

// Caps checkJSON sets on the shape of a control message. No message of
// recon's comes near them: its largest array is a file list
// (MaxFilesAbsolute entries), its largest object the server's config in
// an admin status.
const (
	MaxJSONElements = MaxFilesAbsolute // in one array
	MaxJSONKeys     = 1024             // in one object
)

// jsonLevel is an open object or array of checkJSON's walk.
type jsonLevel struct {
	object bool
	n      int             // keys, or commas of an array, so far
	keys   []byte          // the folded keys so far, end to end, while few
	ends   []int           // where each key ends in keys
	set    map[string]bool // the folded keys, once many
	many   bool            // set is in use
}

// reset makes l a new, empty object or array, keeping its buffers.
func (l *jsonLevel) reset(object bool) {
	l.object, l.n, l.keys, l.ends, l.many = object, 0, l.keys[:0], l.ends[:0], false
	clear(l.set)
}

var errDuplicateKey = errors.New("duplicate key")

// add records a folded key of the object; a key seen before is an error.
func (l *jsonLevel) add(folded []byte) error {
	if l.n++; l.n > MaxJSONKeys {
		return fmt.Errorf("an object of more than %d keys", MaxJSONKeys)
	}
	if l.many {
		if l.set[string(folded)] {
			return errDuplicateKey
		}
		l.set[string(folded)] = true
		return nil
	}
	start := 0
	for _, e := range l.ends {
		if bytes.Equal(l.keys[start:e], folded) {
			return errDuplicateKey
		}
		start = e
	}
	l.keys = append(l.keys, folded...)
	l.ends = append(l.ends, len(l.keys))
	if len(l.ends) > 16 {
		if l.set == nil {
			l.set = make(map[string]bool, 64)
		}
		start = 0
		for _, e := range l.ends {
			l.set[string(l.keys[start:e])] = true
			start = e
		}
		l.many = true
	}
	return nil
}

// appendFoldKey appends key folded by foldKey to dst, without allocating
// for an ASCII key.
func appendFoldKey(dst, key []byte) []byte {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return append(dst, foldKey(string(key))...)
		}
	}
	for _, c := range key {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// checkString refuses the text of a JSON string (between its quotes) that
// encoding/json would quietly change: bytes that are not valid UTF-8, and
// \u escapes of a UTF-16 surrogate that is not half of a valid pair
// (high then low). It decodes both to U+FFFD, so a file name of raw
// bytes would be stored as "\ufffd" instead of refused. A malformed escape
// is left to the decoder, which refuses it.
func checkString(s []byte, escaped bool) error {
	if !utf8.Valid(s) {
		return fmt.Errorf("string %q is not valid UTF-8", truncate(string(s), 40))
	}
	if !escaped {
		return nil
	}
	for j := 0; j < len(s); j++ {
		if s[j] != '\\' {
			continue
		}
		j++
		if j >= len(s) || s[j] != 'u' {
			continue
		}
		r := hex4(s[j+1:])
		if r < 0 {
			return nil
		}
		j += 4
		if !utf16.IsSurrogate(rune(r)) {
			continue
		}
		// A high surrogate must be followed at once by a low one.
		if r < 0xdc00 && j+6 < len(s) && s[j+1] == '\\' && s[j+2] == 'u' {
			if lo := hex4(s[j+3:]); 0xdc00 <= lo && lo <= 0xdfff {
				j += 6
				continue
			}
		}
		return fmt.Errorf("string \"%s\" holds \\u%04x, half of a UTF-16 surrogate pair without its other half: it is not a character", truncate(string(s), 40), r)
	}
	return nil
}

// hex4 returns the value of the 4 hex digits that start b, or -1.
func hex4(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	v := 0
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		v = v<<4 | int(c)
	}
	return v
}

// foldKey folds a key the way encoding/json matches field names: ASCII
// letters to upper case, other runes to the upper case of their lower
// case (so 'ſ' is 'S' and the Kelvin sign is 'K').
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			continue
		}
		b.WriteRune(unicode.ToUpper(unicode.ToLower(r)))
	}
	return b.String()
}

// Decode decodes the body strictly into v. A TypeError message decodes into
// an *Error returned as the error, so callers can write
//
//	if err := m.Decode(TypeJob, &job); err != nil { ... }
//
// It releases the message's share of its budget, if any: the raw message
// is not needed any more.
func (m Message) Decode(want Type, v any) error {
	defer m.Release()
	if m.Type == TypeError {
		var e Error
		if err := decodeStrict(m.Body, &e); err != nil {
			return fmt.Errorf("bad error message: %w", err)
		}
		if e.Code == "" {
			e.Code = CodeInternal
		}
		return &e
	}
	if m.Type != want {
		return fmt.Errorf("unexpected %q message, want %q", m.Type, want)
	}
	if v == nil {
		return nil
	}
	body := m.Body
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := decodeStrict(body, v); err != nil {
		return fmt.Errorf("bad %s message: %w", m.Type, err)
	}
	return nil
}

// ValidateOptions checks job options: each as options.Check does (at most
// MaxOptions, keys of [A-Za-z0-9_]{1,64} distinct when upper-cased, values
// of at most MaxOptionValue bytes without NUL), values of UTF-8, and all
// together at most MaxOptionsTotal bytes.
func ValidateOptions(opts map[string]string) error {
	if err := options.Check(opts); err != nil {
		return err
	}
	total := 0
	for k, v := range opts {
		total += len(k) + len(v)
		if !utf8.ValidString(v) {
			// JSON would carry it as U+FFFD, and the server refuses
			// strings that are not UTF-8 (checkString).
			return fmt.Errorf("option %s: value is not valid UTF-8", k)
		}
	}
	if total > MaxOptionsTotal {
		return fmt.Errorf("options add up to %d bytes, at most %d", total, MaxOptionsTotal)
	}
	return nil
}

// ValidSHA256 reports whether s is 64 lower-case hex digits.
func ValidSHA256(s string) bool {
	if len(s) != SHA256HexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidSubmissionID reports whether s is a well-formed submission id: 1
// to MaxSubmissionID letters, digits or . _ : - (ASCII). A loop, not a
// regular expression: `[...]{1,128}` compiles into 128 copies of its
// class, 1,700 allocations at the start of every recon process.
func ValidSubmissionID(s string) bool {
	if len(s) < 1 || len(s) > MaxSubmissionID {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
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

// Admin requests, on the admin listener only. Each is answered with its
// reply type or TypeError.
const (
	TypeAdminStatus       Type = "admin_status" // Empty → AdminStatus
	TypeAdminStatusReply  Type = "admin_status_reply"
	TypeAdminQueue        Type = "admin_queue" // Empty → QueueReply
	TypeAdminQueueReply   Type = "admin_queue_reply"
	TypeAdminWorkers      Type = "admin_workers" // Empty → WorkersReply
	TypeAdminWorkersReply Type = "admin_workers_reply"
	// TypeAdminLogs is answered with one or more TypeAdminLogsReply
	// messages, the last with Done set.
	TypeAdminLogs          Type = "admin_logs" // LogsRequest → LogsReply...
	TypeAdminLogsReply     Type = "admin_logs_reply"
	TypeAdminCancel        Type = "admin_cancel" // JobRef → CancelReply
	TypeAdminCancelReply   Type = "admin_cancel_reply"
	TypeAdminSetMaxJobs    Type = "admin_setmaxjobs" // SetMaxJobs → SetMaxJobsReply
	TypeAdminSetMaxJobsRep Type = "admin_setmaxjobs_reply"
	TypeAdminReload        Type = "admin_reload" // Empty → ReloadReply
	TypeAdminReloadReply   Type = "admin_reload_reply"
)

// ReloadReply says what a reload of CLIENT_KEYS_FILE changed. A file that
// fails to load is an error reply, and the identities in force stay.
type ReloadReply struct {
	Identities int      `json:"identities"`        // in force now
	Added      []string `json:"added,omitempty"`   // identities new
	Removed    []string `json:"removed,omitempty"` // identities gone
	// Changed are identities whose keys changed (a rotation).
	Changed []string `json:"changed,omitempty"`
	// ClosedSessions is the number of sessions closed because their key
	// is gone.
	ClosedSessions int `json:"closed_sessions"`
}

// Limits of admin requests.
const (
	MaxLogLines     = 10_000
	DefaultLogLines = 50
	MaxWorkers      = 1024
)

// WorkerState is the state of a worker of the pool.
type WorkerState string

// The states of a worker.
const (
	WorkerIdle     WorkerState = "idle"     // waiting for a job
	WorkerBusy     WorkerState = "busy"     // running a job
	WorkerPaused   WorkerState = "paused"   // held back by the resource gate
	WorkerStopping WorkerState = "stopping" // leaving the pool, after its job if it has one
)

// WorkerInfo is one worker of the pool.
type WorkerInfo struct {
	ID    int         `json:"id"`
	State WorkerState `json:"state"`
	JobID string      `json:"job_id,omitempty"`
	// Identity owns the worker's job.
	Identity string    `json:"identity,omitempty"`
	Since    time.Time `json:"since"`
	// ClusterJobID and ClusterState name the job's attempt in a batch
	// system (EXECUTOR = slurm): its Slurm job id and state.
	ClusterJobID string `json:"cluster_job_id,omitempty"`
	ClusterState string `json:"cluster_state,omitempty"`
}

// WorkersReply describes the worker pool.
type WorkersReply struct {
	MaxJobs     int          `json:"max_jobs"`
	Workers     []WorkerInfo `json:"workers"`
	Paused      bool         `json:"paused"`
	PauseReason string       `json:"pause_reason,omitempty"`
}

// Resources are the resource gate's last readings against its thresholds.
type Resources struct {
	// CPUPercent is the load of the processes other than the server (its
	// scripts included), which the gate compares with MaxCPUPercent.
	CPUPercent           float64   `json:"cpu_percent"`
	MaxCPUPercent        int       `json:"max_cpu_percent"`
	AvailableMemoryMB    int64     `json:"available_memory_mb"`
	MinAvailableMemoryMB int64     `json:"min_available_memory_mb"`
	CheckedAt            time.Time `json:"checked_at,omitzero"`
	Error                string    `json:"error,omitempty"`
}

// DiskInfo is the free space of one data directory.
type DiskInfo struct {
	Key       string `json:"key"` // the config key naming the directory
	Path      string `json:"path"`
	FreeBytes int64  `json:"free_bytes"`
}

// AdminStatus is the server's full status for administrators.
type AdminStatus struct {
	StatusReply
	Workers   WorkersReply      `json:"workers"`
	Resources Resources         `json:"resources"`
	Disks     []DiskInfo        `json:"disks"`
	Config    map[string]string `json:"config"` // without secrets
	// KeptUploads are the uploads being received or kept for resuming
	// (with a submission id), by submission id.
	KeptUploads []KeptUpload `json:"kept_uploads"`
	// Space is how the disk space is held.
	Space SpaceUse `json:"space"`
	// Executor is where jobs run (EXECUTOR), and ExecutorCheck the state
	// of its check of the cluster (the Slurm probe job); "" when none.
	Executor      string `json:"executor,omitempty"`
	ExecutorCheck string `json:"executor_check,omitempty"`
}

// SpaceUse describes how a server's disk space is held for its clients,
// and the caps on it.
type SpaceUse struct {
	// Uploads in progress: ReservedBytes are promised to them (announced,
	// less what a resumed upload already had), ReceivedBytes of which are
	// written by now.
	Uploads       int   `json:"uploads"`
	ReservedBytes int64 `json:"reserved_bytes"`
	ReceivedBytes int64 `json:"received_bytes"`
	// Broken uploads kept for resuming, and the bytes they keep on disk.
	KeptUploads     int   `json:"kept_uploads"`
	KeptUploadBytes int64 `json:"kept_upload_bytes"`
	// Results waiting to be fetched (-1 if unknown), of finished jobs;
	// FailedOutputs of them are of failed jobs (KEEP_FAILED_OUTPUTS).
	Results           int   `json:"results"`
	ResultBytes       int64 `json:"result_bytes"`
	FailedOutputs     int   `json:"failed_outputs"`
	FailedOutputBytes int64 `json:"failed_output_bytes"`
	// The caps in force.
	MaxReservedBytesPerClient   int64 `json:"max_reserved_bytes_per_client"`
	MaxKeptUploadBytesPerClient int64 `json:"max_kept_upload_bytes_per_client"`
	MaxKeptUploadBytes          int64 `json:"max_kept_upload_bytes"`
	KeepFailedOutputs           bool  `json:"keep_failed_outputs"`
}

// UploadState is the state of an upload that may be resumed.
type UploadState string

// The states of a resumable upload.
const (
	UploadReceiving UploadState = "receiving" // its client is sending it
	UploadWaiting   UploadState = "waiting"   // broken, kept for its client until it expires
)

// KeptUpload is an upload that may be resumed: being received or broken
// and kept until Expires.
type KeptUpload struct {
	SubmissionID string `json:"submission_id"`
	Client       string `json:"client,omitempty"` // the address it came from
	// Identity is the client identity it belongs to and counts for.
	Identity  string      `json:"identity,omitempty"`
	State     UploadState `json:"state"`
	Files     int         `json:"files"`
	Bytes     int64       `json:"bytes"`      // announced
	BytesKept int64       `json:"bytes_kept"` // on disk
	Expires   *time.Time  `json:"expires,omitempty"`
}

// LogsRequest asks for the last Lines log records, of one job if JobID is
// set.
type LogsRequest struct {
	Lines int    `json:"lines,omitempty"`
	JobID string `json:"job_id,omitempty"`
}

// LogsReply carries log records, oldest first, each one line as stored.
type LogsReply struct {
	Records []string `json:"records"`
	Done    bool     `json:"done"`
}

// CancelReply reports a cancellation.
type CancelReply struct {
	JobID         string   `json:"job_id"`
	PreviousState JobState `json:"previous_state"`
	State         JobState `json:"state"`
}

// SetMaxJobs changes the number of workers.
type SetMaxJobs struct {
	N int `json:"n"`
}

// SetMaxJobsReply reports the change.
type SetMaxJobsReply struct {
	Previous int    `json:"previous"`
	MaxJobs  int    `json:"max_jobs"`
	Note     string `json:"note"`
}

// FileListSize is the size of files as JSON, as it travels in a job or a
// result manifest. A list over MaxFileListBytes is refused before it
// becomes part of a job: otherwise the job could not be described in one
// control message.
func FileListSize(files []FileSum) int {
	var n countWriter
	if err := json.NewEncoder(&n).Encode(files); err != nil {
		return math.MaxInt
	}
	return int(n)
}

type countWriter int64

func (w *countWriter) Write(p []byte) (int, error) {
	*w += countWriter(len(p))
	return len(p), nil
}

// FitQueue drops jobs from the end of q.Jobs (finished ones come last)
// until the reply fits in one control message.
func FitQueue(q *QueueReply) {
	const overhead = 1024 // envelope, field names
	budget := MaxMessageSize - overhead
	for _, a := range q.Unavailable {
		budget -= len(a) + 4
	}
	var n countWriter
	enc := json.NewEncoder(&n)
	for i := range q.Jobs {
		before := n
		if err := enc.Encode(&q.Jobs[i]); err != nil {
			q.Jobs = q.Jobs[:i]
			return
		}
		if budget -= int(n - before); budget < 0 {
			q.Jobs = q.Jobs[:i]
			return
		}
	}
}
