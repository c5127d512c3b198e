//go:build !linux

package reap

import (
	"context"
	"errors"
)

// Supported reports whether Find can see the processes of this system.
const Supported = false

func find(Match) ([]Process, error) { return nil, nil }

func kill(context.Context, Match) ([]Process, error) { return nil, nil }

// Group is a cgroup holding every process of one run; there is none on
// this system.
type Group struct{}

// NewGroup fails: no cgroups on this system.
func NewGroup(string) (*Group, error) { return nil, errNoGroups }

// FD is never called: NewGroup fails.
func (g *Group) FD() int { return -1 }

// Kill does nothing.
func (g *Group) Kill(context.Context) ([]Process, error) { return nil, nil }

// KillGroups does nothing.
func KillGroups(context.Context, Match) ([]Process, error) { return nil, nil }

var errNoGroups = errors.New("no cgroups on this system")

// OwnCgroup fails: no cgroups on this system.
func OwnCgroup() (string, error) { return "", errNoGroups }
