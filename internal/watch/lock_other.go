//go:build !unix

package watch

import (
	"fmt"
	"os"
)

// lockFile opens path. Other systems get no lock: run one daemon per state
// directory.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return f, nil
}

func openNoBlock(path string) (*os.File, error) { return os.Open(path) }
