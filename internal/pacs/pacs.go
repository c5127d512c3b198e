package pacs

import (
	"errors"
	"fmt"
)

// Instance is one DICOM file to send.
type Instance struct {
	Path           string // absolute path of the Part 10 file
	SOPClassUID    string
	SOPInstanceUID string
}

// Result is what the PACS said about one instance of a request.
type Result struct {
	// Stored is true when the PACS confirmed the instance: STOW-RS listed
	// its SOP Instance UID in ReferencedSOPSequence, C-STORE answered
	// status 0x0000 or a warning (0x0001, 0xBxxx).
	Stored bool
	// Answered is false when the PACS said nothing about the instance (the
	// request broke off before it was reached); such an instance is sent
	// again later.
	Answered bool
	// Reason says why an answered instance was not stored.
	Reason string
	// Warning is a warning status the PACS stored the instance with.
	Warning string
}

// Error is a request that failed as a whole. Retry says whether sending
// again later may succeed (the PACS could not be reached, was busy or
// failed inside); otherwise the configuration or the data must change
// (refused credentials, a request it cannot take).
type Error struct {
	Msg   string
	Retry bool
}

func (e *Error) Error() string { return e.Msg }

// Retryable reports whether err is worth sending again later: an *Error
// with Retry set, or any error that is not an *Error (the transport).
func Retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retry
	}
	return err != nil
}

func retryf(format string, a ...any) error {
	return &Error{Msg: fmt.Sprintf(format, a...), Retry: true}
}
func finalf(format string, a ...any) error { return &Error{Msg: fmt.Sprintf(format, a...)} }
