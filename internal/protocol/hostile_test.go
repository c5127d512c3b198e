package protocol

// Control messages a hostile peer could craft, refused before or while
// they are decoded (docs/SECURITY.md, section 3).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// TestHostileControlMessages feeds ReadMessage and Decode the control
// messages a hostile peer could craft. Every one is refused with an error
// that wraps ErrBadMessage (the stream is still in step, so the server can
// answer bad_request), or, for the body, a Decode error.
func TestHostileControlMessages(t *testing.T) {
	deep := strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000)
	tests := []struct {
		name    string
		payload string
		want    string // in the error
	}{
		{"malformed JSON", `{"type":"status","body":{`, "unexpected end of JSON input"},
		{"not an object", `"status"`, "cannot unmarshal"},
		{"null", `null`, "no type"},
		{"empty object", `{}`, "no type"},
		{"unknown envelope field", `{"type":"status","admin":true}`, "unknown field"},
		{"duplicate type", `{"type":"status","type":"submit"}`, "duplicate key"},
		{"duplicate type in another case", `{"type":"status","TYPE":"submit"}`, "duplicate key"},
		{"duplicate field with a folding rune", `{"type":"status","body":{"ſtatus":1,"STATUS":2}}`, "duplicate key"},
		{"duplicate body", `{"type":"submit","body":{},"body":{"files":[]}}`, "duplicate key"},
		{"duplicate field in the body", `{"type":"job_status","body":{"job_id":"a","job_id":"b"}}`, "duplicate key"},
		{"duplicate field escaped", `{"type":"job_status","body":{"job_id":"a","job\u005fid":"b"}}`, "duplicate key"},
		{"duplicate option", `{"type":"submit","body":{"files":[{"name":"a","size":1}],"options":{"k":"1","k":"2"}}}`, "duplicate key"},
		{"duplicate option in another case", `{"type":"submit","body":{"files":[{"name":"a","size":1}],"options":{"k":"1","K":"2"}}}`, "duplicate key"},
		{"duplicate file field", `{"type":"submit","body":{"files":[{"name":"a","size":1,"size":2}]}}`, "duplicate key"},
		{"deep nesting in the body", `{"type":"status","body":{"a":` + deep + `}}`, "nested more than"},
		{"deep nesting at the top", deep, "nested more than"},
		{"17 levels", `{"type":"x","body":` + strings.Repeat(`{"a":`, 16) + `1` + strings.Repeat("}", 16) + `}`, "nested more than"},
		{"trailing object", `{"type":"status"}{"type":"submit"}`, "after top-level value"},
		{"trailing garbage", `{"type":"status"} x`, "after top-level value"},
		{"trailing NUL", "{\"type\":\"status\"}\x00", "after top-level value"},
		{"type is a number", `{"type":5}`, "cannot unmarshal"},
		{"type is an object", `{"type":{"a":1}}`, "cannot unmarshal"},
		{"body is a string", `{"type":"status","body":"x"}`, ""}, // refused by Decode, below
		{"invalid UTF-8 in a key", "{\"type\":\"status\",\"\xff\":1}", "not valid UTF-8"},
		{"huge number in the envelope", `{"type":"status","x":1e999999}`, "unknown field"},
		{"NaN", `{"type":"status","body":NaN}`, "invalid character"},
		{"comment", `{"type":"status"/*x*/}`, "invalid character"},
		{"single quotes", `{'type':'status'}`, "invalid character"},
		{"BOM", "\ufeff{\"type\":\"status\"}", "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMessage(bytes.NewReader(frame(tt.payload)))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ReadMessage = %v, want the envelope accepted and the body refused", err)
				}
				if err := m.Decode(m.Type, &Empty{}); err == nil {
					t.Fatalf("Decode accepted body %s", m.Body)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadMessage accepted %.80q as %q", tt.payload, m.Type)
			}
			if !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadMessage = %v, want ErrBadMessage containing %q", err, tt.want)
			}
		})
	}
}

// TestStringsMustBeUnicode checks that a string of the message that is
// not valid Unicode - raw bytes that are not UTF-8, or a \u escape of a
// UTF-16 surrogate without its other half - is refused before decoding:
// encoding/json would turn it into U+FFFD, and a file name so changed
// would be stored under a name the client never sent.
func TestStringsMustBeUnicode(t *testing.T) {
	t.Parallel()
	submit := func(name string) string {
		return `{"type":"submit","body":{"files":[{"name":"` + name + `","size":1}]}}`
	}
	const notUTF8, lone = "is not valid UTF-8", "surrogate pair without its other half"
	tests := []struct {
		name, payload string
		want          string // in the error; "" = accepted
	}{
		{"raw byte", submit("a\xffb.7"), notUTF8},
		{"raw bytes of Latin-1", submit("caf\xe9.7"), notUTF8},
		{"truncated sequence", submit("a\xc3"), notUTF8},
		{"overlong encoding", submit("a\xc0\xaf"), notUTF8},
		{"surrogate encoded in UTF-8", submit("a\xed\xa0\x80"), notUTF8},
		{"lone low surrogate", submit(`\udc80.7`), lone},
		{"lone high surrogate", submit(`a\ud800b.7`), lone},
		{"high surrogate at the end", submit(`a\ud83d`), lone},
		{"high surrogate then a letter escape", submit(`\ud83d\u0041.7`), lone},
		{"two high surrogates", submit(`\ud83d\ud83d.7`), lone},
		{"reversed pair", submit(`\ude00\ud83d.7`), lone},
		{"high surrogate then a literal emoji", submit("\\ud83d\U0001F600.7"), lone},
		{"upper-case hex", submit(`\uDC80.7`), lone},
		{"in an option value", "{\"type\":\"submit\",\"body\":{\"files\":[{\"name\":\"a\",\"size\":1}],\"options\":{\"k\":\"\xff\"}}}", notUTF8},
		{"in an option key", `{"type":"submit","body":{"files":[{"name":"a","size":1}],"options":{"\udc80":"v"}}}`, lone},
		{"in the type", "{\"type\":\"stat\xffus\"}", notUTF8},
		{"valid pair", submit(`\ud83d\ude00.7`), ""},
		{"valid pair, upper case", submit(`\uD83D\uDE00.7`), ""},
		{"literal emoji", submit("\U0001F600.7"), ""},
		{"escaped replacement character", submit(`\ufffd.7`), ""},
		{"literal replacement character", submit("\ufffd.7"), ""},
		{"escaped backslash before u", submit(`a\\udc80.7`), ""},
		{"accents", submit("caf\u00e9 \\u00e9.7"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMessage(bytes.NewReader(frame(tt.payload)))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ReadMessage(%q) = %v, want it read", tt.payload, err)
				}
				var sub Submit
				if err := m.Decode(TypeSubmit, &sub); err != nil {
					t.Fatalf("Decode(%q) = %v", tt.payload, err)
				}
				if name := sub.Files[0].Name; !utf8.ValidString(name) || strings.ContainsRune(name, utf8.RuneError) != strings.Contains(tt.name, "replacement") {
					t.Errorf("name decoded as %q", name)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadMessage(%q) = %v, want ErrBadMessage containing %q", tt.payload, err, tt.want)
			}
		})
	}
}

// TestShapeCaps checks the caps on arrays and objects: a message at each
// cap is read, one element or key more is refused before decoding, since
// its decoded value could take several times the message's size.
func TestShapeCaps(t *testing.T) {
	t.Parallel()
	array := func(n int) string {
		return `{"type":"status","body":{"a":[` + strings.TrimSuffix(strings.Repeat("0,", n), ",") + `]}}`
	}
	object := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"type":"status","body":{"o":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":0`, i)
		}
		b.WriteString(`}}}`)
		return b.String()
	}
	for _, tt := range []struct {
		name, payload, want string
	}{
		{"array at the cap", array(MaxJSONElements), ""},
		{"array over the cap", array(MaxJSONElements + 1), "an array of more than"},
		{"object at the cap", object(MaxJSONKeys), ""},
		{"object over the cap", object(MaxJSONKeys + 1), "an object of more than"},
	} {
		_, err := ReadMessage(bytes.NewReader(frame(tt.payload)))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: ReadMessage = %v, want it read", tt.name, err)
		case tt.want != "" && (!errors.Is(err, ErrBadMessage) || !strings.Contains(fmt.Sprint(err), tt.want)):
			t.Errorf("%s: ReadMessage = %v, want ErrBadMessage containing %q", tt.name, err, tt.want)
		}
	}
}

// TestHostileBodies checks Decode of bodies with wrong types, huge numbers
// and unknown fields, for the requests a server decodes.
func TestHostileBodies(t *testing.T) {
	tests := []struct {
		typ  Type
		body string
		v    any
	}{
		{TypeSubmit, `{"files":"a"}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":1,"size":1}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":1.5}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":-1e3}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":18446744073709551616}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":"1"}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":true}]}`, &Submit{}},
		{TypeSubmit, `{"files":[{"name":"a","size":1,"path":"/etc"}]}`, &Submit{}},
		{TypeSubmit, `{"files":[],"options":{"k":["v"]}}`, &Submit{}},
		{TypeSubmit, `{"files":[],"options":{"k":null,"j":{}}}`, &Submit{}},
		{TypeSubmit, `{"files":[],"submission_id":7}`, &Submit{}},
		{TypeSubmit, `[]`, &Submit{}},
		{TypeFileDone, `{"sha256":["a"]}`, &FileDone{}},
		{TypeJobStatus, `{"job_id":null,"x":1}`, &JobRef{}},
		{TypeStatus, `{"verbose":true}`, &Empty{}},
		{TypeAdminSetMaxJobs, `{"n":1e100}`, &SetMaxJobs{}},
		{TypeAdminSetMaxJobs, `{"n":9223372036854775808}`, &SetMaxJobs{}},
		{TypeAdminLogs, `{"lines":-1e400}`, &LogsRequest{}},
	}
	for _, tt := range tests {
		m := Message{Type: tt.typ, Body: []byte(tt.body)}
		if err := m.Decode(tt.typ, tt.v); err == nil {
			t.Errorf("Decode(%s %s) accepted it as %+v", tt.typ, tt.body, tt.v)
		}
	}
}

// refCheckJSON is a slow, plain reference for checkJSON on valid JSON: it
// walks the tokens and reports a duplicate key (folded as encoding/json
// matches names) or nesting over MaxJSONDepth.
func refCheckJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	type level struct {
		keys      map[string]bool
		expectKey bool
		elems     int
	}
	var stack []level
	// element counts a value that starts in the current array.
	element := func() error {
		if n := len(stack); n > 0 && stack[n-1].keys == nil {
			if stack[n-1].elems++; stack[n-1].elems > MaxJSONElements {
				return errors.New("too many elements")
			}
		}
		return nil
	}
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		prev := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if err := element(); err != nil {
					return err
				}
				if len(stack) >= MaxJSONDepth {
					return errors.New("too deep")
				}
				l := level{}
				if d == '{' {
					l = level{keys: map[string]bool{}, expectKey: true}
				}
				stack = append(stack, l)
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
			continue
		}
		if _, ok := tok.(string); ok {
			raw := b[prev:dec.InputOffset()]
			raw = raw[bytes.IndexByte(raw, '"')+1 : bytes.LastIndexByte(raw, '"')]
			if !refUnicode(raw) {
				return errors.New("not Unicode")
			}
		}
		if n := len(stack); n > 0 && stack[n-1].expectKey {
			f := foldKey(tok.(string))
			if stack[n-1].keys[f] {
				return errors.New("duplicate")
			}
			stack[n-1].keys[f] = true
			if len(stack[n-1].keys) > MaxJSONKeys {
				return errors.New("too many keys")
			}
			stack[n-1].expectKey = false
			continue
		}
		if err := element(); err != nil {
			return err
		}
		valueDone()
	}
}

// refUnicode reports whether the text of a valid JSON string is valid
// Unicode: it spells the string as UTF-16 code units (each \u escape one
// unit, each other character its units) and checks that every surrogate
// unit is half of a pair, high then low.
func refUnicode(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	var units []uint16
	for i := 0; i < len(raw); {
		if raw[i] == '\\' && raw[i+1] == 'u' {
			var u uint16
			fmt.Sscanf(string(raw[i+2:i+6]), "%04x", &u)
			units = append(units, u)
			i += 6
			continue
		}
		if raw[i] == '\\' {
			units = append(units, uint16(raw[i+1]))
			i += 2
			continue
		}
		r, n := utf8.DecodeRune(raw[i:])
		units = utf16.AppendRune(units, r)
		i += n
	}
	for i := 0; i < len(units); i++ {
		switch u := rune(units[i]); {
		case 0xd800 <= u && u < 0xdc00:
			if i+1 == len(units) || units[i+1] < 0xdc00 || units[i+1] > 0xdfff {
				return false
			}
			i++
		case 0xdc00 <= u && u <= 0xdfff:
			return false
		}
	}
	return true
}

// FuzzCheckJSON compares checkJSON with the reference on valid JSON: the
// fast scanner must find every duplicate key and every nesting too deep
// that the token walk finds, and nothing else.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{
		`{"type":"status"}`,
		`{"a":1,"A":2}`,
		`{"a":{"b":1,"b":2}}`,
		`{"a":"\"b\\","a\u0000":1,"a\u0000":2}`,
		`[{"a":1},{"a":1}]`,
		`{"k":"x","ſ":1,"S":2}`,
		`{"a":[1,{"b":[]},"c"],"d":{"e":{"f":null}}}`,
		strings.Repeat("[", 20) + strings.Repeat("]", 20),
		"{\"a\xff\":\"b\"}",
		`["\udc80","\ud800","\ude00\ud83d","\ud83d\ude00","\\udc80"]`,
		`{"\uD83D\uDE00":"\ud83d\u0041"}`,
		`[[0,0],{"a":[0]}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := checkJSON(b)
		if !json.Valid(b) {
			return
		}
		want := refCheckJSON(b)
		if (got == nil) != (want == nil) {
			t.Fatalf("checkJSON(%q) = %v, reference = %v", b, got, want)
		}
	})
}
