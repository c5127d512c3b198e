package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/config"
)

func TestParse(t *testing.T) {
	type E = config.Entry
	const (
		S = config.KindString
		I = config.KindInt
		B = config.KindBool
	)
	tests := []struct {
		name string
		in   string
		want []E
	}{
		{"pair", "A = b", []E{{"A", "b", S, 1}}},
		{"no spaces", "A=b", []E{{"A", "b", S, 1}}},
		{"tabs and padding", "  \tA\t=\t b c \t", []E{{"A", "b c", S, 1}}},
		{"key upper-cased", "server_Port = 60000", []E{{"SERVER_PORT", "60000", I, 1}}},
		{"split at first =", "A = b=c==", []E{{"A", "b=c==", S, 1}}},
		{"bool true any case", "A = TRUE\nB = false", []E{{"A", "TRUE", B, 1}, {"B", "false", B, 2}}},
		{"int", "A = -5\nB = 007\nC = +3", []E{{"A", "-5", I, 1}, {"B", "007", I, 2}, {"C", "+3", I, 3}}},
		{"not int", "A = 1.5\nB = 99999999999999999999\nC = 1_000", []E{{"A", "1.5", S, 1}, {"B", "99999999999999999999", S, 2}, {"C", "1_000", S, 3}}},
		{"double quotes stripped", `A = "x y"`, []E{{"A", "x y", S, 1}}},
		{"single quotes stripped", `A = 'x y'`, []E{{"A", "x y", S, 1}}},
		{"quoted int is a string", `A = "5"`, []E{{"A", "5", S, 1}}},
		{"quoted bool is a string", `A = 'true'`, []E{{"A", "true", S, 1}}},
		{"quotes keep spaces", `A = "  x  "`, []E{{"A", "  x  ", S, 1}}},
		{"other quote inside", `A = "it's"` + "\n" + `B = 'say "hi"'`, []E{{"A", "it's", S, 1}, {"B", `say "hi"`, S, 2}}},
		{"hash in quotes, comment after", `A = "x#y" # c`, []E{{"A", "x#y", S, 1}}},
		{"comment after quoted value, no space", `A = 'x'#c`, []E{{"A", "x", S, 1}}},
		{"comment after value", "A = x # c", []E{{"A", "x", S, 1}}},
		{"comment after int", "A = 60000 # port", []E{{"A", "60000", I, 1}}},
		{"hash inside unquoted value", "A = x#y", []E{{"A", "x", S, 1}}},
		{"comment line", "# A = b\n  # indented\nB = 1", []E{{"B", "1", I, 3}}},
		{"blank lines", "\n\n  \t\nA = 1\n\n", []E{{"A", "1", I, 4}}},
		{"crlf", "A = 1\r\n\r\nB = 2\r\n", []E{{"A", "1", I, 1}, {"B", "2", I, 3}}},
		{"no final newline", "A = 1\nB = 2", []E{{"A", "1", I, 1}, {"B", "2", I, 2}}},
		{"byte order mark", "\ufeffA = 1", []E{{"A", "1", I, 1}}},
		{"empty value", "CLIENT_WATCH_DIRECTORY = ", []E{{"CLIENT_WATCH_DIRECTORY", "", S, 1}}},
		{"empty value no space", "A =", []E{{"A", "", S, 1}}},
		{"empty quoted value", `A = ""`, []E{{"A", "", S, 1}}},
		{"empty value then comment", "A = # nothing", []E{{"A", "", S, 1}}},
		{"quote only at end", `A = abc"`, []E{{"A", `abc"`, S, 1}}},
		{"quote in the middle", `A = a"b"c`, []E{{"A", `a"b"c`, S, 1}}},
		{"unicode value", "A = Grüße/über", []E{{"A", "Grüße/über", S, 1}}},
		{"underscore key", "_A_1 = x", []E{{"_A_1", "x", S, 1}}},
		{"empty file", "", nil},
		{"only comments", "# a\n# b\n", nil},
		{"key of max length", strings.Repeat("K", config.MaxKeyLen) + " = 1", []E{{strings.Repeat("K", config.MaxKeyLen), "1", I, 1}}},
		{"line of max length", "A = " + strings.Repeat("x", config.MaxLineLen-4), []E{{"A", strings.Repeat("x", config.MaxLineLen-4), S, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Parse("t.opts", strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const key = "vzx6hE510FwS7ZW4rlp2yOIjGMjJKcdNv1o5kJ5NXgA="
	tests := []struct {
		name string
		in   string
		want string // the whole error text
		line int    // line of the first *ParseError
	}{
		{"no equals", "A = 1\njust words", "t.opts:2: missing '=': want ITEM = VALUE", 2},
		{"hash before equals", "A # = b", "t.opts:1: missing '=': want ITEM = VALUE", 1},
		{"empty key", "= b", "t.opts:1: empty key before '='", 1},
		{"blank key", "   = b", "t.opts:1: empty key before '='", 1},
		{"space in key", "A B = c", "t.opts:1: malformed key name: want a letter or '_' followed by letters, digits and '_'", 1},
		{"key starts with digit", "1A = c", "t.opts:1: malformed key name: want a letter or '_' followed by letters, digits and '_'", 1},
		{"dash in key", "A-B = c", "t.opts:1: malformed key name: want a letter or '_' followed by letters, digits and '_'", 1},
		{"key too long", strings.Repeat("K", config.MaxKeyLen+1) + " = 1", "t.opts:1: key name is longer than 40 characters", 1},
		{"key pasted without name", key, "t.opts:1: key name is longer than 40 characters", 1},
		{"key pasted after space", "SHARED_KEY " + key, "t.opts:1: key name is longer than 40 characters", 1},
		{"unterminated double quote", `A = "abc`, "t.opts:1: unterminated quote in the value of A", 1},
		{"unterminated single quote", `A = 'abc`, "t.opts:1: unterminated quote in the value of A", 1},
		{"mismatched quotes", `A = "abc'`, "t.opts:1: unterminated quote in the value of A", 1},
		{"text after closing quote", `A = "x" y`, "t.opts:1: text after the closing quote in the value of A", 1},
		{"duplicate key", "A = 1\n\nB = 2\nA = 3", "t.opts:4: duplicate key A (first set on line 1)", 4},
		{"duplicate key other case", "Shared_Key = 1\nSHARED_KEY = 1", "t.opts:2: duplicate key SHARED_KEY (first set on line 1)", 2},
		{"control character", "A = a\x00b", "t.opts:1: line contains a control character", 1},
		{"lone carriage return", "A = a\rb", "t.opts:1: line contains a control character", 1},
		{"invalid utf-8", "A = \xff", "t.opts:1: line is not valid UTF-8", 1},
		{"line too long", "A = " + strings.Repeat("x", config.MaxLineLen-3), "t.opts:1: line is longer than 4096 bytes", 1},
		{"file too large", strings.Repeat("# comment\n", config.MaxFileSize/10+1), "t.opts: file is larger than 1048576 bytes", 0},
		{"several errors joined", "x\nA = 1\ny", "t.opts:1: missing '=': want ITEM = VALUE\nt.opts:3: missing '=': want ITEM = VALUE", 1},
		{"too many errors", strings.Repeat("x\n", 12), tooManyErrors(), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Parse("t.opts", strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse(%.60q) = %v, want error %q", tt.in, got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%.60q) error = %q, want %q", tt.in, err, tt.want)
			}
			var pe *config.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%.60q) error %T is not a *ParseError", tt.in, err)
			}
			if pe.File != "t.opts" || pe.Line != tt.line {
				t.Errorf("Parse(%.60q) ParseError at %s:%d, want t.opts:%d", tt.in, pe.File, pe.Line, tt.line)
			}
			if strings.Contains(err.Error(), key[:20]) {
				t.Errorf("Parse(%.60q) error %q reveals the key", tt.in, err)
			}
		})
	}
}

func tooManyErrors() string {
	var b strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "t.opts:%d: missing '=': want ITEM = VALUE\n", i)
	}
	return b.String() + "t.opts: too many errors; stopped"
}

func TestParseErrorFormat(t *testing.T) {
	tests := []struct {
		e    config.ParseError
		want string
	}{
		{config.ParseError{File: "recon.opts", Line: 7, Msg: "boom"}, "recon.opts:7: boom"},
		{config.ParseError{File: "recon.opts", Msg: "SHARED_KEY is required"}, "recon.opts: SHARED_KEY is required"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
	w := config.Warning{File: "recon.opts", Line: 7, Msg: "unknown key X"}
	if got, want := w.String(), "recon.opts:7: unknown key X"; got != want {
		t.Errorf("Warning.String() = %q, want %q", got, want)
	}
	w.Line = 0
	if got, want := w.String(), "recon.opts: unknown key X"; got != want {
		t.Errorf("Warning.String() = %q, want %q", got, want)
	}
}
