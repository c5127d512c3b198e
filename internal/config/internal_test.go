package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/keys"
)

// loaders are the builders of each program's config, with the schema they
// read and the programs whose keys they must read.
var loaders = []struct {
	name  string
	sch   *schema
	progs program
	build func(*source) any
}{
	{"server", reconOpts, progServer, func(s *source) any { return buildServer(s) }},
	{"client", reconOpts, progClient | progWatch, func(s *source) any { return buildClient(s) }},
	{"admin", reconOpts, progAdmin, func(s *source) any { return buildAdmin(s) }},
	{"relay", relayOpts, progRelay, func(s *source) any { return buildRelay(s) }},
	{"relay-admin", relayOpts, progRelayAdmin, func(s *source) any { return buildRelayAdmin(s) }},
}

// TestLoadersReadTheirKeys checks the schema's "used by" against what each
// loader reads, so the reference never lies.
func TestLoadersReadTheirKeys(t *testing.T) {
	for _, l := range loaders {
		src, err := newSource("x.opts", "/cfg", nil, l.sch)
		if err != nil {
			t.Fatal(err)
		}
		l.build(src)
		var want, got []string
		for _, sec := range l.sch.sections {
			for _, f := range sec.fields {
				if f.usedBy&l.progs != 0 {
					want = append(want, f.name)
				}
			}
		}
		for name := range src.read {
			got = append(got, name)
		}
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s loader reads (-schema says +reads):\n%s", l.name, diff)
		}
	}
}

// TestDefaultsValid parses every default through its own field type, and
// checks the shape of each field.
func TestDefaultsValid(t *testing.T) {
	for _, sch := range []*schema{reconOpts, relayOpts} {
		for _, sec := range sch.sections {
			for _, f := range sec.fields {
				if f.doc == "" || f.usedBy == 0 || typeNames[f.typ] == "" {
					t.Errorf("%s %s: missing doc, users or type name", sch.file, f.name)
				}
				if checkKey(f.name) != "" || strings.ToUpper(f.name) != f.name {
					t.Errorf("%s %s: bad key name", sch.file, f.name)
				}
				if f.typ == typeKey {
					if f.def != "" {
						t.Errorf("%s %s: a key has no default", sch.file, f.name)
					}
					continue
				}
				if f.optional {
					t.Errorf("%s %s: only keys are optional", sch.file, f.name)
				}
				if _, err := parseValue(&f, f.def, "/cfg"); err != nil {
					t.Errorf("%s %s: default %q: %s", sch.file, f.name, f.def, err.msg)
				}
			}
		}
		for _, l := range sch.legacy {
			if sch.field(l) != nil {
				t.Errorf("%s: legacy key %s is also a field", sch.file, l)
			}
		}
	}
}

// keyRun matches what a leaked key would look like in a message: more
// base64 characters in a row than the longest key name.
var keyRun = regexp.MustCompile(`[A-Za-z0-9+/_-]{41,}`)

func checkNoKeyText(t *testing.T, what string, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if r := keyRun.FindString(m); r != "" {
			t.Errorf("%s: message %q holds %q, which may be a key", what, m, r)
		}
	}
}

func messages(err error, warns []Warning) []string {
	var out []string
	if err != nil {
		out = append(out, err.Error())
	}
	for _, w := range warns {
		out = append(out, w.String())
	}
	return out
}

// TestNoKeyInMessages puts a key, and key-like text, under every key name
// and in every odd place, and checks that no error or warning repeats it.
func TestNoKeyInMessages(t *testing.T) {
	k := keys.MustGenerate().Encode()
	std := strings.NewReplacer("-", "+", "_", "/").Replace(k)
	values := []string{k, std, strings.TrimRight(k, "="), k[:30], k + "x", "x" + k, k + "," + k, "[" + k + "]:1", k + ":1",
		`{"` + k + `": null}`, `{"a": "` + k + `"} x`, k[:20] + " " + k[20:]}
	for _, sch := range []*schema{reconOpts, relayOpts} {
		for _, sec := range sch.sections {
			for _, f := range sec.fields {
				for _, v := range values {
					for _, l := range loaders {
						if l.sch != sch {
							continue
						}
						src, err := newSource("x.opts", "/cfg", []byte(f.name+" = '"+v+"'\n"), sch)
						if err != nil {
							t.Fatal(err)
						}
						l.build(src)
						checkNoKeyText(t, l.name+" "+f.name, messages(src.err(), src.warns)...)
					}
				}
			}
		}
	}
	// Odd lines: a key on its own, after a misspelt name, as a name.
	for _, line := range []string{k, "SHARED_KEY " + k, "SHARED_KEY: " + k, k + " = 1", strings.TrimRight(k, "=") + " = 1",
		"SHARED_KEY = \"" + k, "SHARED_KEY = '" + k + "' junk", "X" + k[:39] + " = 1"} {
		for _, l := range loaders {
			src, err := newSource("x.opts", "/cfg", []byte(line+"\n"), l.sch)
			if err != nil {
				checkNoKeyText(t, l.name+" parse", err.Error())
				continue
			}
			l.build(src)
			checkNoKeyText(t, l.name, messages(src.err(), src.warns)...)
		}
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"A", "", 1},
		{"SERVER_PROT", "SERVER_PORT", 1},
		{"SERVER_PORT", "SERVER_PORT", 0},
		{"KITTEN", "SITTING", 3},
		{"CA", "ABC", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		e    Entry
		want string
	}{
		{Entry{Key: "A", Value: "b", Kind: KindString}, "A = b"},
		{Entry{Key: "A", Value: "", Kind: KindString}, "A ="},
		{Entry{Key: "A", Value: "5", Kind: KindInt}, "A = 5"},
		{Entry{Key: "A", Value: "5", Kind: KindString}, `A = "5"`},
		{Entry{Key: "A", Value: "True", Kind: KindBool}, "A = True"},
		{Entry{Key: "A", Value: "x#y", Kind: KindString}, `A = "x#y"`},
		{Entry{Key: "A", Value: ` "x" `, Kind: KindString}, `A = ' "x" '`},
		{Entry{Key: "A", Value: `'x`, Kind: KindString}, `A = "'x"`},
	}
	for _, tt := range tests {
		got, err := formatEntry(tt.e)
		if err != nil || got != tt.want {
			t.Errorf("formatEntry(%+v) = %q, %v, want %q", tt.e, got, err, tt.want)
		}
	}
	for _, e := range []Entry{
		{Key: "a", Value: "x"},
		{Key: "A", Value: `"'#`},
		{Key: "A", Value: "x\ny"},
		{Key: "A", Value: "x", Kind: KindInt},
		{Key: "A", Value: "", Kind: KindBool},
	} {
		if got, err := formatEntry(e); err == nil {
			t.Errorf("formatEntry(%+v) = %q, want an error", e, got)
		}
	}
}

// maxFuzzInput bounds the fuzz inputs: the parser works line by line, and the
// fuzzer's minimiser is quadratic in the input's length, so large inputs only
// slow fuzzing down. The size caps are covered by the unit tests.
const maxFuzzInput = 512

// seedCorpus seeds a fuzz target with the testdata files, cut into groups of
// a few lines (see maxFuzzInput), and with a few lines of every kind.
func seedCorpus(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.opts*"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		ls := strings.SplitAfter(string(data), "\n")
		for i := 0; i < len(ls); i += 4 {
			if chunk := strings.Join(ls[i:min(i+4, len(ls))], ""); len(chunk) <= maxFuzzInput {
				f.Add([]byte(chunk))
			}
		}
	}
	for _, s := range []string{
		"", "A = b", `A = "x#y" # c`, "A = 'x'", "A = \"x", "A = 1\nA = 2", "= 1", "\ufeffA=TRUE\r\n",
		"SERVER_PORT = 0", "CLIENT_DAEMON_RECON_OPTIONS_JSON = '{\"a\": 1}'", "BACKEND_SERVERS = [::1]:1,localhost:2",
		"MAX_JOB_INPUT_BYTES = 5 GiB", "RESULT_RETENTION_HOURS = 0.5", "TRUSTED_IPS = ::ffff:127.0.0.1/128",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse checks that the parser never panics, that its errors are
// *ParseError values, and that whatever parses, written back in canonical
// form, parses again to the same entries.
func FuzzParse(f *testing.F) {
	seedCorpus(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		entries, err := parseData("f.opts", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError: %v", err, err)
			}
			checkNoKeyText(t, "parse", err.Error())
			return
		}
		out, err := format(entries)
		if err != nil {
			t.Fatalf("format(%+v): %v", entries, err)
		}
		again, err := parseData("f.opts", out)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", out, err)
		}
		if len(again) != len(entries) {
			t.Fatalf("canonical form %q gives %d entries, want %d", out, len(again), len(entries))
		}
		for i := range entries {
			a, b := entries[i], again[i]
			if a.Key != b.Key || a.Value != b.Value || a.Kind != b.Kind || b.Line != i+1 {
				t.Fatalf("entry %d: %+v, after canonical round trip %+v", i, a, b)
			}
		}
		if out2, _ := format(again); !bytes.Equal(out, out2) {
			t.Fatalf("canonical form is not stable: %q then %q", out, out2)
		}
	})
}

// FuzzLoad checks that no loader panics on any file, and that no message
// carries key-like text.
func FuzzLoad(f *testing.F) {
	seedCorpus(f)
	f.Add([]byte(fmt.Sprintf("SHARED_KEY = %s\nSERVER_ADMIN_SHARED_KEY = %s\n",
		base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)), base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)))))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		for _, l := range loaders {
			src, err := newSource("f.opts", "/cfg", data, l.sch)
			if err != nil {
				continue
			}
			c := l.build(src)
			if c == nil {
				t.Fatalf("%s: nil config", l.name)
			}
			checkNoKeyText(t, l.name, messages(src.err(), src.warns)...)
		}
	})
}
