package client

import (
	"io"
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
)

// TestBackendLostResumable: an unavailable error that came during the
// upload (a relay lost the backend receiving the files) is resumable and
// still has its code; before the upload it is not; other errors pass
// through backendLost unchanged.
func TestBackendLostResumable(t *testing.T) {
	unavailable := protocol.Errorf(protocol.CodeUnavailable, "lost backend b:1 during the upload")
	lost := backendLost(unavailable)
	if !Resumable(lost) || !IsCode(lost, CodeUnavailable) || lost.Error() != unavailable.Error() {
		t.Errorf("backendLost(%v) = %v: resumable %v, code unavailable %v; want both", unavailable, lost, Resumable(lost), IsCode(lost, CodeUnavailable))
	}
	if Resumable(unavailable) {
		t.Errorf("Resumable(%v) before the upload = true, want false", unavailable)
	}
	for _, err := range []error{nil, io.ErrUnexpectedEOF, protocol.Errorf(protocol.CodeHashMismatch, "differs")} {
		if got := backendLost(err); got != err {
			t.Errorf("backendLost(%v) = %v, want it unchanged", err, got)
		}
	}
}
