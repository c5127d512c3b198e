//go:build !linux

package reap

import "context"

// Supported reports whether Find can see the processes of this system.
const Supported = false

func find(Match) ([]Process, error) { return nil, nil }

func kill(context.Context, Match) ([]Process, error) { return nil, nil }
