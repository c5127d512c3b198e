package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/recon-mri/recon/client"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestOptionsTooLargeForEnvironment checks that options within the
// protocol's caps that would not fit in the script's environment (control
// characters take six bytes each in RECON_OPTIONS_JSON) are refused before
// a byte is stored, instead of a queued job that cannot start.
func TestOptionsTooLargeForEnvironment(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := servertest.Start(t, servertest.Options{})
	opts := map[string]string{}
	for i := range 8 {
		opts[fmt.Sprintf("K%d", i)] = strings.Repeat("\x01", protocol.MaxOptionsTotal/8-2)
	}
	if err := protocol.ValidateOptions(opts); err != nil {
		t.Fatalf("the options must pass the protocol's checks: %v", err)
	}

	// A raw announcement, with a submission id (uploads that have one are
	// kept for resuming when they break).
	refuseSubmission(t, ctx, s, protocol.Submit{
		Files: files("P1.7"), Options: opts, SubmissionID: "env-too-large",
	}, protocol.CodeBadRequest)

	// Through the Go client, with a real file.
	c := s.Dial(t)
	p := writeInput(t, t.TempDir(), "P2.7", randomBytes(t, 64<<10))
	_, err := c.Submit(ctx, []string{p}, &client.SubmitOptions{Options: opts, SubmissionID: "env-too-large-2"})
	if !client.IsCode(err, client.CodeBadRequest) || !strings.Contains(err.Error(), "RECON_OPTIONS_JSON") {
		t.Fatalf("Submit = %v, want a bad_request naming RECON_OPTIONS_JSON", err)
	}
	t.Logf("refused: %v", err)
	if names := dirNames(t, s.Config.InputBaseDir); len(names) != 0 {
		t.Errorf("inputs dir after refused submissions: %v", names)
	}
	c2 := s.Dial(t)
	q, err := c2.Queue(ctx)
	if err != nil {
		t.Fatalf("Queue: %v", err)
	}
	if len(q) != 0 {
		t.Errorf("queue after refused submissions: %+v", q)
	}

	// Options just as long in bytes, but plain text, are accepted and
	// reach the script.
	for k := range opts {
		opts[k] = strings.Repeat("v", protocol.MaxOptionsTotal/8-2)
	}
	j, err := c2.Submit(ctx, []string{p}, &client.SubmitOptions{Options: opts})
	if err != nil {
		t.Fatalf("Submit with plain options at the total cap: %v", err)
	}
	if done := waitDone(t, ctx, c2, j.JobID); done.State != "succeeded" {
		t.Errorf("job with plain options at the total cap ended %s (%s)", done.State, done.Error)
	}
}
