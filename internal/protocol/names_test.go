package protocol

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateFileName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" = valid
	}{
		{"P00000.7", ""},
		{"phantom.cfl", ""},
		{"phantom.hdr", ""},
		{"scan 1 (copy).dat", ""},
		{"données-é.raw", ""},
		{".hidden", ""},
		{"a..b", ""},
		{"console.txt", ""},
		{"COM10", ""},
		{strings.Repeat("a", 255), ""},
		{"", "empty"},
		{".", "not allowed"},
		{"..", "not allowed"},
		{"../x", "contains '/'"},
		{"/abs", "contains '/'"},
		{"a/b", "contains '/'"},
		{`a\b`, `contains '\\'`},
		{`..\..\x`, `contains '\\'`},
		{"C:x", "contains ':'"},
		{"a\x00b", "control character"},
		{"a\nb", "control character"},
		{"a\tb", "control character"},
		{"a\x7fb", "control character"},
		{"a\u0085b", "control character"},
		{"evil\u202Etxt.exe", "invisible formatting"},
		{"zero\u200Bwidth", "invisible formatting"},
		{"bom\uFEFF", "invisible formatting"},
		{"\xff\xfe", "not valid UTF-8"},
		{strings.Repeat("a", 256), "at most 255"},
		{strings.Repeat("é", 128), "at most 255"},
		{"NUL", "reserved device name"},
		{"nul", "reserved device name"},
		{"con.txt", "reserved device name"},
		{"CON.tar.gz", "reserved device name"},
		{"com1", "reserved device name"},
		{"LPT9.log", "reserved device name"},
		{"aux", "reserved device name"},
		{" lead", "white space"},
		{"trail ", "white space"},
		{"dot.", "ends with a dot"},
	}
	for _, tt := range tests {
		err := ValidateFileName(tt.name)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateFileName(%q) = %v, want valid", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateFileName(%q) = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestValidateResultName(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{"phantom.png", true},
		{"dicom/slice001.dcm", true},
		{"a/b/c/d.txt", true},
		{"", false},
		{"/etc/passwd", false},
		{"a//b", false},
		{"a/../b", false},
		{"../x", false},
		{"a/", false},
		{"a/./b", false},
		{`a\b`, false},
		{strings.Repeat("d/", 600) + "x", false},
	}
	for _, tt := range tests {
		err := ValidateResultName(tt.name)
		if (err == nil) != tt.valid {
			t.Errorf("ValidateResultName(%q) = %v, want valid=%v", tt.name, err, tt.valid)
		}
	}
}

func FuzzValidateFileName(f *testing.F) {
	for _, s := range []string{"P00000.7", "../x", "con.txt", "a\u202eb", "", ".", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateFileName(name) != nil {
			return
		}
		// A valid name is one local path element.
		if !filepath.IsLocal(name) || filepath.Base(name) != name || strings.ContainsAny(name, `/\:`) {
			t.Fatalf("ValidateFileName accepted %q, which is not a plain local name", name)
		}
		if ValidateResultName(name) != nil {
			t.Fatalf("valid file name %q is not a valid result name", name)
		}
	})
}

func TestFoldName(t *testing.T) {
	same := [][2]string{
		{"P00000.7", "p00000.7"},
		{"Phantom.CFL", "phantom.cfl"},
		{"caf\u00e9.raw", "cafe\u0301.raw"},      // NFC vs NFD (HFS+)
		{"CAF\u00c9.raw", "cafe\u0301.raw"},      // and case
		{"\ufb01le.dat", "file.dat"},             // compatibility ligature
		{"Stra\u00dfe.dat", "STRASSE.dat"},       // full case folding
		{"\u212bngstrom", "\u00e5ngstrom"},       // Angstrom sign vs a-ring
		{"\uff30\uff10.7", "p0.7"},               // full-width letters
		{"\u03a3\u03b1.dat", "\u03c3\u03b1.dat"}, // Greek capital sigma
	}
	for _, p := range same {
		if FoldName(p[0]) != FoldName(p[1]) {
			t.Errorf("FoldName(%q) = %q, FoldName(%q) = %q: want equal", p[0], FoldName(p[0]), p[1], FoldName(p[1]))
		}
	}
	different := [][2]string{
		{"P00000.7", "P00001.7"},
		{"a.cfl", "a.hdr"},
		{"caf\u00e9", "cafe"},
	}
	for _, p := range different {
		if FoldName(p[0]) == FoldName(p[1]) {
			t.Errorf("FoldName(%q) == FoldName(%q) = %q: want different", p[0], p[1], FoldName(p[0]))
		}
	}
}

// TestWindowsUnportableNames checks the characters Windows refuses in file
// names besides '/', '\' and ':': a result so named would make a fetch on
// Windows fail, so names with them are refused (and such results skipped).
func TestWindowsUnportableNames(t *testing.T) {
	for _, name := range []string{"a<b", "a>b", `a"b`, "a|b", "what?.dcm", "*.7"} {
		if err := ValidateFileName(name); err == nil || !strings.Contains(err.Error(), "Windows") {
			t.Errorf("ValidateFileName(%q) = %v, want refused as unportable to Windows", name, err)
		}
		if err := ValidateResultName("sub/" + name); err == nil {
			t.Errorf("ValidateResultName(%q) accepted", "sub/"+name)
		}
	}
}
