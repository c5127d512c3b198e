package server_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/recon-mri/recon/client"
)

// TestResultShrunkWhileSent truncates a result on the server while it is
// fetched (the server reads it straight into its records, secure.Conn's
// SendFrom): the fetch fails, nothing is written to the destination, and
// the results stay on the server for another attempt.
func TestResultShrunkWhileSent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const size = 32 << 20
	_, c, id, path := bigResultServer(t, ctx, size)
	var once sync.Once
	progress := func(done, total int64) {
		once.Do(func() {
			if err := os.Truncate(path, size/2); err != nil {
				t.Error(err)
			}
		})
	}
	dst := filepath.Join(t.TempDir(), "out")
	_, _, err := c.Fetch(ctx, id, dst, &client.FetchOptions{Progress: progress})
	if err == nil {
		t.Fatal("fetch of a result truncated while sent succeeded")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the destination exists after a failed fetch: %v", err)
	}
	if !exists(path) {
		t.Errorf("the result was removed although the client did not confirm it")
	}
}
