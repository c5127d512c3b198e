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
	"regexp"
	"strings"
	"time"
)

// Version is the protocol version spoken inside the channel.
const Version = 1

// Limits on what a peer may send. They are checked before anything is
// allocated or stored.
const (
	MaxMessageSize   = 64 << 10 // one control message, JSON bytes
	MaxOptions       = 64       // options per job
	MaxOptionKeyLen  = 64
	MaxOptionValue   = 4 << 10  // bytes
	MaxOptionsTotal  = 32 << 10 // bytes of all keys and values together (they become environment variables)
	MaxNameLen       = 255      // bytes, one path element
	MaxResultNameLen = 1024     // bytes, a result path with '/' separators
	MaxFilesAbsolute = 100_000  // hard cap on files in one message, whatever the config says
	SHA256HexLen     = 64
	MaxSubmissionID  = 128
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
)

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
type FileSum struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
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
type SubmitReady struct {
	Existing bool     `json:"existing,omitempty"`
	Job      *JobInfo `json:"job,omitempty"`
}

// FileDone ends one file's bytes.
type FileDone struct {
	SHA256 string `json:"sha256"`
}

// JobRef names a job.
type JobRef struct {
	JobID string `json:"job_id"`
}

// Empty is the body of requests without arguments.
type Empty struct{}

// JobInfo is a job as clients see it.
type JobInfo struct {
	JobID        string            `json:"job_id"`
	State        string            `json:"state"`
	Position     int               `json:"position,omitempty"` // in the queue, 1-based, when queued
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
	// Backend is set by a relay: the address of the server holding the job.
	Backend string `json:"backend,omitempty"`
}

// Terminal reports whether the job has ended.
func (j *JobInfo) Terminal() bool {
	switch j.State {
	case "succeeded", "failed", "cancelled":
		return true
	}
	return false
}

// Event is a job state change sent to a waiting client.
type Event struct {
	Job JobInfo `json:"job"`
}

// StatusReply describes the server.
type StatusReply struct {
	Version       string         `json:"version"`
	Protocol      int            `json:"protocol"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	StartedAt     time.Time      `json:"started_at"`
	Jobs          map[string]int `json:"jobs"`
	MaxWorkers    int            `json:"max_workers"`
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
}

// ReadMessage reads one control message. The length is checked before
// anything is allocated.
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Message{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxMessageSize {
		return Message{}, fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	var env envelope
	if err := decodeStrict(b, &env); err != nil {
		return Message{}, fmt.Errorf("bad control message: %w", err)
	}
	if env.Type == "" {
		return Message{}, errors.New("bad control message: no type")
	}
	return Message{Type: env.Type, Body: env.Body}, nil
}

// Decode decodes the body strictly into v. A TypeError message decodes into
// an *Error returned as the error, so callers can write
//
//	if err := m.Decode(TypeJob, &job); err != nil { ... }
func (m Message) Decode(want Type, v any) error {
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

// decodeStrict decodes one JSON value: unknown fields and trailing data are
// errors.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

var optionKeyRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// ValidateOptions checks job options: at most MaxOptions, keys matching
// [A-Za-z0-9_]{1,64} and distinct when upper-cased (they become environment
// variable names), values at most MaxOptionValue bytes without NUL.
func ValidateOptions(opts map[string]string) error {
	if len(opts) > MaxOptions {
		return fmt.Errorf("too many options: %d, at most %d", len(opts), MaxOptions)
	}
	seen := make(map[string]string, len(opts))
	total := 0
	for k, v := range opts {
		total += len(k) + len(v)
		if !optionKeyRE.MatchString(k) {
			return fmt.Errorf("option key %q is not valid: use 1 to 64 letters, digits or _", truncate(k, 80))
		}
		up := strings.ToUpper(k)
		if other, dup := seen[up]; dup {
			return fmt.Errorf("option keys %q and %q differ only in case", other, k)
		}
		seen[up] = k
		if len(v) > MaxOptionValue {
			return fmt.Errorf("option %s: value is %d bytes, at most %d", k, len(v), MaxOptionValue)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("option %s: value contains a NUL byte", k)
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
)

// Limits of admin requests.
const (
	MaxLogLines     = 10_000
	DefaultLogLines = 50
	MaxWorkers      = 1024
)

// WorkerInfo is one worker of the pool.
type WorkerInfo struct {
	ID    int       `json:"id"`
	State string    `json:"state"` // idle, busy, paused, stopping
	JobID string    `json:"job_id,omitempty"`
	Since time.Time `json:"since"`
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
	JobID         string `json:"job_id"`
	PreviousState string `json:"previous_state"`
	State         string `json:"state"`
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
