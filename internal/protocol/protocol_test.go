package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func frame(payload string) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	sub := Submit{SubmissionID: "abc", Files: []FileInfo{{Name: "P00000.7", Size: 12}}, Options: map[string]string{"method": "pics"}}
	if err := WriteMessage(&buf, TypeSubmit, sub); err != nil {
		t.Fatal(err)
	}
	if err := WriteError(&buf, Errorf(CodeQueueFull, "full %d", 3)); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var got Submit
	if err := m.Decode(TypeSubmit, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sub, got); diff != "" {
		t.Errorf("submit round trip (-want +got):\n%s", diff)
	}
	m, err = ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Decode(TypeJob, &JobInfo{})
	if !IsCode(err, CodeQueueFull) || err.Error() != "full 3" {
		t.Errorf("error message decoded as %v, want queue_full 'full 3'", err)
	}
	if _, err := ReadMessage(&buf); !errors.Is(err, io.EOF) {
		t.Errorf("read past the end = %v, want io.EOF", err)
	}
}

func TestReadMessageRejects(t *testing.T) {
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, MaxMessageSize+1)
	huge := []byte{0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"zero length", []byte{0, 0, 0, 0}, "zero length"},
		{"oversized", big, "too large"},
		{"4 GiB", huge, "too large"},
		{"truncated header", []byte{0, 0}, "unexpected EOF"},
		{"truncated body", frame(`{"type":"status"}`)[:10], "unexpected EOF"},
		{"not json", frame(`hello`), "bad control message"},
		{"no type", frame(`{"body":{}}`), "no type"},
		{"unknown envelope field", frame(`{"type":"status","x":1}`), "unknown field"},
		{"trailing data", frame(`{"type":"status"} {}`), "after top-level value"},
		{"array", frame(`[1,2]`), "bad control message"},
		{"wrong type", frame(`{"type":5}`), "bad control message"},
	}
	for _, tt := range tests {
		_, err := ReadMessage(bytes.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ReadMessage = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		body string
		want string
	}{
		{`{"files":[{"name":"a","size":1}],"extra":1}`, "unknown field"},
		{`{"files":[{"name":"a","size":"1"}]}`, "cannot unmarshal"},
		{`{"files":[{"name":"a","size":1e400}]}`, "cannot unmarshal"},
		{`{"files":[{"name":"a","size":99999999999999999999}]}`, "cannot unmarshal"},
		{`{"files":[]} x`, "after top-level value"},
		{`{"files":[{"name":"a","size":1,"mode":1}]}`, "unknown field \"mode\""},
		{`{"files":[],"options":{"a":"b"},"option\u0073s":{}}`, "unknown field \"optionss\""},
		{`{"files":[{"name":"a","size":1},{"name":"b","size":1,"sha256":"x"}]}`, "unknown field \"sha256\""},
		{`{"options":{"a":1}}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		m := Message{Type: TypeSubmit, Body: []byte(tt.body)}
		err := m.Decode(TypeSubmit, &Submit{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%s) = %v, want error containing %q", tt.body, err, tt.want)
		}
	}
	// Keys match fields as encoding/json matches them: escaped, in
	// another case, with a rune that folds to a letter.
	var sub Submit
	m := Message{Type: TypeSubmit, Body: []byte(`{"FILES":[{"NaMe":"a","\u017fize":1}],"submission_id":"x","Options":{"Unknown_Key":"v"}}`)}
	if err := m.Decode(TypeSubmit, &sub); err != nil || len(sub.Files) != 1 || sub.Files[0].Size != 1 || sub.Options["Unknown_Key"] != "v" {
		t.Errorf("Decode of folded keys = %v, %+v", err, sub)
	}
	// Fields of an embedded struct are known.
	var st AdminStatus
	m = Message{Type: TypeAdminStatusReply, Body: []byte(`{"version":"v","protocol":1,"workers":{"max_jobs":1,"workers":[]},"disks":[],"config":{}}`)}
	if err := m.Decode(TypeAdminStatusReply, &st); err != nil || st.Version != "v" {
		t.Errorf("Decode of an embedded struct's fields = %v, %+v", err, st)
	}
	if err := (Message{Type: TypeStatus}).Decode(TypeJob, &JobInfo{}); err == nil || !strings.Contains(err.Error(), "unexpected") {
		t.Errorf("Decode of the wrong type = %v, want an unexpected-message error", err)
	}
}

func TestWriteMessageTooLarge(t *testing.T) {
	t.Parallel()
	opts := map[string]string{"k": strings.Repeat("v", MaxMessageSize)}
	err := WriteMessage(io.Discard, TypeSubmit, Submit{Options: opts})
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("WriteMessage of a %d-byte message = %v, want ErrMessageTooLarge", MaxMessageSize, err)
	}
}

func TestValidateOptions(t *testing.T) {
	many := map[string]string{}
	for i := range MaxOptions + 1 {
		many["k"+strings.Repeat("x", i%60)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	tests := []struct {
		opts map[string]string
		want string // "" = valid
	}{
		{nil, ""},
		{map[string]string{"method": "pics", "A_1": "$(touch x); rm -rf /\n--output-dir=/etc"}, ""},
		{map[string]string{strings.Repeat("k", 64): "v"}, ""},
		{map[string]string{"m": strings.Repeat("v", MaxOptionValue)}, ""},
		{map[string]string{strings.Repeat("k", 65): "v"}, "not valid"},
		{map[string]string{"": "v"}, "not valid"},
		{map[string]string{"a-b": "v"}, "not valid"},
		{map[string]string{"a b": "v"}, "not valid"},
		{map[string]string{"é": "v"}, "not valid"},
		{map[string]string{"PATH=x": "v"}, "not valid"},
		{map[string]string{"method": "a", "METHOD": "b"}, "differ only in case"},
		{map[string]string{"m": strings.Repeat("v", MaxOptionValue+1)}, "at most"},
		{map[string]string{"m": "a\x00b"}, "NUL"},
		{map[string]string{"m": "caf\xe9"}, "not valid UTF-8"},
		{map[string]string{"m": "caf\u00e9 \ufffd"}, ""},
		{many, "too many options"},
		{bigOpts(9, MaxOptionValue), "add up to"},
		{bigOpts(7, MaxOptionValue), ""},
	}
	for _, tt := range tests {
		err := ValidateOptions(tt.opts)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateOptions(%d options) = %v, want valid", len(tt.opts), err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateOptions(%v) = %v, want error containing %q", keysOf(tt.opts), err, tt.want)
		}
	}
}

func bigOpts(n, size int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m["k"+string(rune('a'+i))] = strings.Repeat("v", size)
	}
	return m
}

func keysOf(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestValidSHA256(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	for _, tt := range []struct {
		s    string
		want bool
	}{
		{good, true},
		{strings.ToUpper(good), false},
		{good[:63], false},
		{good + "0", false},
		{strings.Repeat("g", 64), false},
		{"", false},
	} {
		if got := ValidSHA256(tt.s); got != tt.want {
			t.Errorf("ValidSHA256(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add(frame(`{"type":"status"}`))
	f.Add(frame(`{"type":"submit","body":{"files":[{"name":"a","size":1}],"options":{"k":"v"}}}`))
	f.Add(frame(`{"type":"error","body":{"code":"x","message":"y"}}`))
	f.Add([]byte{0, 0, 0, 1, '{'})
	f.Add(frame(`{"type":"submit","body":{"files":[{"name":"a","size":1}],"FILES":[]}}`))
	f.Add(frame(`{"type":"submit","body":{"files":[],"options":{"k":"1","k":"2"}}}`))
	f.Add(frame(`{"type":"status","body":[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}`))
	f.Add(frame("{\"type\":\"submit\",\"body\":{\"files\":[{\"name\":\"a\xff.7\",\"size\":1}]}}"))
	f.Add(frame(`{"type":"submit","body":{"files":[{"name":"\udc80.7","size":1},{"name":"\ud83d\ude00","size":1}]}}`))
	f.Add(frame(`{"type":"submit","body":{"files":[{"name":"\ude00\ud83d","size":1}],"options":{"k":"\ud800"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, v := range []any{&Submit{}, &JobInfo{}, &Results{}, &StatusReply{}, &Event{}, &FileDone{}, &JobRef{}} {
			_ = m.Decode(m.Type, v)
		}
		var sub Submit
		if m.Decode(m.Type, &sub) == nil {
			_ = ValidateOptions(sub.Options)
			for _, f := range sub.Files {
				_ = ValidateFileName(f.Name)
			}
		}
	})
}
