package watch

import (
	"fmt"
	"path/filepath"
	"strings"
)

// parsePatterns splits CLIENT_WATCH_PATTERN: one filepath.Match pattern,
// or several separated by commas ("*.cfl,*.hdr" for BART pairs).
func parsePatterns(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("watch pattern %q: an empty pattern between commas", s)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("watch pattern %q: %w", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// matchAny reports whether name matches one of patterns.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := filepath.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}
