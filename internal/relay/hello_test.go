package relay_test

import (
	"path/filepath"
	"testing"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/servertest"
)

// TestHelloThroughRelay: a client that offers BLAKE3 (the Go client's
// default) to a relay gets SHA-256: the relay passes the files and their
// digests through to a backend session without hello, which checks
// SHA-256. The job's view shows each file's SHA-256, and the results come
// back whole.
func TestHelloThroughRelay(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	key := keys.MustGenerate().Encode()
	bs := startBackends(t, 1, key, servertest.Options{})
	dir := t.TempDir()
	r := startRelay(t, writeRelayConfig(t, dir, []string{bs[0].Addr().String()}, key, nil))
	c := r.dial(t)
	in := writeInput(t, dir, "h.7", 3<<20, 5)
	job, err := c.Submit(ctx, []string{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := job.Files[0]; f.SHA256 != fileSHA(t, in) || f.BLAKE3 != "" {
		t.Errorf("the input through the relay: %+v, want its SHA-256 (a SHA-256 session)", f)
	}
	if _, err := c.Wait(ctx, job.JobID, nil); err != nil {
		t.Fatal(err)
	}
	_, files, err := c.Fetch(ctx, job.JobID, filepath.Join(t.TempDir(), "out"), nil)
	if err != nil || len(files) != 1 || fileSHA(t, files[0].Path) != fileSHA(t, in) || files[0].BLAKE3 != "" {
		t.Fatalf("fetch through the relay: %+v, %v", files, err)
	}
}
