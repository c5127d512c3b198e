package watch

import "testing"

func TestPatterns(t *testing.T) {
	ps, err := parsePatterns("*.cfl, *.hdr")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"ph.cfl": true, "ph.hdr": true, "ph.cfl.tmp": false, "notes.txt": false, ".cfl": true} {
		if got := matchAny(ps, name); got != want {
			t.Errorf("matchAny(%q, %q) = %v, want %v", ps, name, got, want)
		}
	}
	for _, bad := range []string{"*.cfl,", ",*.hdr", "*.cfl,,*.hdr", "[", "*.cfl,["} {
		if _, err := parsePatterns(bad); err == nil {
			t.Errorf("parsePatterns(%q) accepted", bad)
		}
	}
}
