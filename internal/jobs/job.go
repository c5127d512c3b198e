// Package jobs holds recon's job model, its state machine and the durable
// store that keeps jobs across restarts and crashes.
//
// A job moves through these states:
//
//	queued ──Claim──► running ──Finish──► succeeded | failed | cancelled
//	   │                 │
//	   └─Cancel──► cancelled   └─Requeue / Recover──► queued (same queue place)
//	                           └─Recover (too many attempts)──► failed
//
// The queue is first in, first out by an insertion sequence kept in the
// store, never by timestamps: a job put back after a crash or a shutdown
// keeps its original place.
//
// The package knows nothing of the network (docs/ARCHITECTURE.md;
// TestImportRules at the module root checks it): callers validate what
// they receive before they hand it to the store (ValidID is provided for
// job ids).
package jobs

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// State is the state of a job.
type State string

// The states of a job. Queued and Running are the unfinished states; the
// others are terminal and never change again.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// States returns the five states, in the order a job goes through them.
func States() []State {
	return []State{Queued, Running, Succeeded, Failed, Cancelled}
}

// Valid reports whether s is one of the five known states.
func (s State) Valid() bool {
	switch s {
	case Queued, Running, Succeeded, Failed, Cancelled:
		return true
	}
	return false
}

// Terminal reports whether s is a final state (succeeded, failed or
// cancelled).
func (s State) Terminal() bool {
	return s == Succeeded || s == Failed || s == Cancelled
}

// CanTransition reports whether the state machine allows a job in state s to
// move to state to:
//
//	queued  → running, cancelled
//	running → queued, succeeded, failed, cancelled
//
// Terminal states allow nothing.
func (s State) CanTransition(to State) bool {
	switch s {
	case Queued:
		return to == Running || to == Cancelled
	case Running:
		return to == Queued || to.Terminal()
	}
	return false
}

// File describes one file of a job: an input file or a result file.
type File struct {
	// Name is the file's name relative to the job's input or output
	// directory. Result names may contain '/' for files in subfolders.
	Name string `json:"name"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the file's contents. An input
	// file uploaded in a session that checked it with BLAKE3 has none ("").
	SHA256 string `json:"sha256"`
	// BLAKE3 is the lowercase hex BLAKE3 of the file's contents, when it
	// was taken: of an input uploaded with BLAKE3, and of every result
	// collected by a server of protocol version 3.
	BLAKE3 string `json:"blake3,omitempty"`
}

// Job is one reconstruction job as the store keeps it. Times are in UTC;
// a zero time means "not yet".
type Job struct {
	// ID is the job's random, unguessable id (see NewID).
	ID string
	// Identity is the client identity that submitted the job and owns it.
	Identity string
	// SubmissionID is the client's id for the submission, which makes a
	// retried submission idempotent. Empty when the client sent none.
	SubmissionID string
	State        State
	// Files are the job's input files.
	Files []File
	// Options are the key/value options the client sent for the script.
	Options map[string]string
	// ClientAddr is the address the job was submitted from, for the logs.
	ClientAddr string

	SubmittedAt time.Time
	// StartedAt is when the job last started running; zero while queued.
	StartedAt time.Time
	// FinishedAt is when the job reached a terminal state.
	FinishedAt time.Time

	// Attempts is the number of times the job was started.
	Attempts int
	// ExitCode is the script's exit status; nil when the script never
	// finished (cancelled while queued, server stopped, failed to start).
	ExitCode *int
	// Error is a human message: why the job failed or was cancelled, or
	// why it was put back in the queue.
	Error string
	// Results is the result manifest, set when the job finishes.
	Results []File

	// DeliveredAt is when the client confirmed receipt of the results.
	DeliveredAt time.Time
	// ResultsRemovedAt is when the job's output directory was removed,
	// after delivery or expiry.
	ResultsRemovedAt time.Time
}

var (
	// ErrNotFound is returned when no job has the given id or submission id.
	ErrNotFound = errors.New("job not found")
	// ErrNoJob is returned by Claim when no job is queued.
	ErrNoJob = errors.New("no queued job")
	// ErrState is matched (with errors.Is) by every error about a state
	// change the state machine forbids; see StateError.
	ErrState = errors.New("invalid job state change")
	// ErrExists is returned by Create when a job with the same id exists.
	ErrExists = errors.New("job id already exists")
)

// StateError reports a state change the state machine forbids. It matches
// ErrState with errors.Is.
// The message names both states; the method that returns it adds the
// operation and the job id.
type StateError struct {
	ID   string
	From State // the job's current state
	To   State // the state that was asked for
}

func (e *StateError) Error() string {
	return fmt.Sprintf("%v from %s to %s", ErrState, e.From, e.To)
}

// Is makes errors.Is(err, ErrState) true for a *StateError.
func (e *StateError) Is(target error) bool { return target == ErrState }

// IDLen is the length of a job id from NewID.
const IDLen = 26

// idBytes is the number of random bytes in a job id: 128 bits.
const idBytes = 16

const idAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

var idEncoding = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

// NewID returns a fresh job id: 128 bits from crypto/rand written as 26
// characters of lowercase base32 (a–z, 2–7) without padding. Ids are safe
// as file and directory names and in URLs.
func NewID() string {
	var b [idBytes]byte
	// crypto/rand.Read never returns an error; it crashes the program
	// when the system's random source fails.
	_, _ = rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

// ValidID reports whether s has the exact form NewID produces. Check ids
// that come from the network with it before using them in paths.
func ValidID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	// 26 characters carry 130 bits: the last one holds the final 3 bits
	// of the id and 2 zero bits. Requiring them zero gives every id
	// exactly one spelling.
	last := strings.IndexByte(idAlphabet, s[IDLen-1])
	return last&3 == 0
}
