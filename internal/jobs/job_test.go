package jobs_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/jobs"
)

func TestNewIDFormatAndUniqueness(t *testing.T) {
	const n = 10000
	seen := make(map[string]bool, n)
	for range n {
		id := jobs.NewID()
		if len(id) != jobs.IDLen {
			t.Fatalf("NewID() = %q, length %d, want %d", id, len(id), jobs.IDLen)
		}
		if strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("NewID() = %q, has characters outside [a-z2-7]", id)
		}
		if !jobs.ValidID(id) {
			t.Fatalf("ValidID(NewID() = %q) = false", id)
		}
		if seen[id] {
			t.Fatalf("NewID() = %q twice in %d calls", id, n)
		}
		seen[id] = true
	}
}

func TestNewIDUsesAllBits(t *testing.T) {
	// Every character position except the last (3 bits) should take many
	// values over a few hundred ids; a constant position would mean a
	// broken encoder or random source.
	const n = 500
	values := make([]map[byte]bool, jobs.IDLen)
	for i := range values {
		values[i] = map[byte]bool{}
	}
	for range n {
		id := jobs.NewID()
		for i := range id {
			values[i][id[i]] = true
		}
	}
	for i, v := range values[:jobs.IDLen-1] {
		if len(v) < 20 {
			t.Errorf("position %d took only %d distinct values in %d ids", i, len(v), n)
		}
	}
	if got := len(values[jobs.IDLen-1]); got != 8 {
		t.Errorf("last position took %d distinct values in %d ids, want 8", got, n)
	}
}

func TestValidID(t *testing.T) {
	good := jobs.NewID()
	tests := []struct {
		id   string
		want bool
	}{
		{good, true},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaa", true},
		{"77777777777777777777777774", true},  // last char 28: low bits 00
		{"7777777777777777777777777y", true},  // 24
		{"7777777777777777777777777z", false}, // 25: non-zero padding bits
		{"aaaaaaaaaaaaaaaaaaaaaaaaab", false},
		{"", false},
		{good[:jobs.IDLen-1], false},
		{good + "a", false},
		{strings.ToUpper(good), false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa1a", false}, // '1' not in the alphabet
		{"aaaaaaaaaaaaaaaaaaaaaaaa8a", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa=a", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa/a", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa.a", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa\na", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaa\x00a", false},
		{"../../../../../../etc/pass", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaaé", false}, // 26 bytes with a 2-byte rune
	}
	for _, tt := range tests {
		if got := jobs.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	f.Add(jobs.NewID())
	f.Add("aaaaaaaaaaaaaaaaaaaaaaaaab")
	f.Fuzz(func(t *testing.T, s string) {
		if !jobs.ValidID(s) {
			return
		}
		if len(s) != jobs.IDLen || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("ValidID(%q) = true for a malformed id", s)
		}
	})
}

var allStates = []jobs.State{jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed, jobs.Cancelled}

func TestStateTerminalAndValid(t *testing.T) {
	terminal := map[jobs.State]bool{jobs.Succeeded: true, jobs.Failed: true, jobs.Cancelled: true}
	for _, s := range allStates {
		if got := s.Terminal(); got != terminal[s] {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, terminal[s])
		}
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
	}
	for _, s := range []jobs.State{"", "done", "QUEUED", "Running "} {
		if s.Valid() || s.Terminal() {
			t.Errorf("%q: Valid() = %v, Terminal() = %v, want false, false", s, s.Valid(), s.Terminal())
		}
	}
}

func TestStateCanTransition(t *testing.T) {
	allowed := map[[2]jobs.State]bool{
		{jobs.Queued, jobs.Running}:    true,
		{jobs.Queued, jobs.Cancelled}:  true,
		{jobs.Running, jobs.Queued}:    true,
		{jobs.Running, jobs.Succeeded}: true,
		{jobs.Running, jobs.Failed}:    true,
		{jobs.Running, jobs.Cancelled}: true,
		{jobs.Queued, "bogus"}:         false,
		{"bogus", jobs.Running}:        false,
		{jobs.Running, jobs.Running}:   false,
		{jobs.Succeeded, jobs.Queued}:  false,
		{jobs.Cancelled, jobs.Running}: false,
		{jobs.Failed, jobs.Succeeded}:  false,
		{jobs.Queued, jobs.Failed}:     false,
		{jobs.Queued, jobs.Succeeded}:  false,
		{jobs.Succeeded, jobs.Failed}:  false,
		{jobs.Cancelled, jobs.Queued}:  false,
	}
	for _, from := range allStates {
		for _, to := range allStates {
			want := allowed[[2]jobs.State{from, to}]
			if got := from.CanTransition(to); got != want {
				t.Errorf("%s.CanTransition(%s) = %v, want %v", from, to, got, want)
			}
		}
	}
	for pair, want := range allowed {
		if got := pair[0].CanTransition(pair[1]); got != want {
			t.Errorf("%q.CanTransition(%q) = %v, want %v", pair[0], pair[1], got, want)
		}
	}
}

func TestStateError(t *testing.T) {
	var err error = &jobs.StateError{ID: "abc", From: jobs.Succeeded, To: jobs.Cancelled}
	wrapped := fmt.Errorf("outer: %w", err)
	if !errors.Is(wrapped, jobs.ErrState) {
		t.Errorf("errors.Is(%v, ErrState) = false", wrapped)
	}
	if errors.Is(wrapped, jobs.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = true", wrapped)
	}
	msg := err.Error()
	for _, want := range []string{"succeeded", "cancelled"} {
		if !strings.Contains(msg, want) {
			t.Errorf("StateError message %q does not mention %q", msg, want)
		}
	}
}
