package server_test

import (
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestUploadsEndHoldingNothing: every way an upload ends gives back the
// disk space reserved for it, and leaves only what it should: a broken
// upload with a submission id is kept for resuming, a broken one without
// is removed, a committed one is the job's input.
func TestUploadsEndHoldingNothing(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	r := newResumeFiles(t)
	breakUpload(t, ctx, s, r, "kept", 200_000, true)

	plain := rawClient(t, ctx, s)
	if ready, err := announce(t, plain, r.submit("")); err != nil || ready.Resume != nil {
		t.Fatalf("announcement without a submission id: %+v, %v", ready, err)
	}
	sendRaw(t, plain, r.data[0], sha256Hex(r.data[0]))
	sendRaw(t, plain, r.data[1][:100_000], "")
	plain.Close()

	rc := rawClient(t, ctx, s)
	ready, err := announce(t, rc, r.submit("done"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := finishUpload(t, rc, r, ready)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}

	var sp protocol.SpaceUse
	servertest.Eventually(t, pollTimeout, "no upload in progress, one kept", func() bool {
		sp = adminSpace(t, ctx, s)
		return sp.Uploads == 0 && len(incoming(t, s)) == 1
	})
	if sp.ReservedBytes != 0 || sp.ReceivedBytes != 0 || sp.KeptUploads != 1 || sp.KeptUploadBytes != 210_000 {
		t.Errorf("space after the uploads ended: %+v; want nothing reserved, one upload of 210000 bytes kept", sp)
	}
	checkJobFiles(t, ctx, s, r, job.JobID)
}
