package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
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

func TestValidSubmissionID(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{
		{"a", true},
		{"scanner-1:2026.12.08_P00000.7", true},
		{strings.Repeat("Z9", MaxSubmissionID/2), true},
		{strings.Repeat("a", MaxSubmissionID+1), false},
		{"", false},
		{"a b", false},
		{"a/b", false},
		{"../x", false},
		{"é", false},
		{"a\x00", false},
		{"a\n", false},
	} {
		if got := ValidSubmissionID(tt.s); got != tt.want {
			t.Errorf("ValidSubmissionID(%q) = %v, want %v", tt.s, got, tt.want)
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

// TestReadMessageAllocatesAsBytesArrive announces the largest message and
// sends a few bytes: ReadMessage fails with io.ErrUnexpectedEOF without
// allocating anything near the announced size.
func TestReadMessageAllocatesAsBytesArrive(t *testing.T) {
	// Not parallel: it counts the bytes the whole process allocates, and
	// the package's parallel tests wait while it runs.
	in := make([]byte, 4+100)
	binary.BigEndian.PutUint32(in, MaxMessageSize)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := ReadMessage(bytes.NewReader(in)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadMessage of a truncated large message = %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 2<<20 {
		t.Errorf("10 truncated %d-byte messages allocated %d bytes", MaxMessageSize, got)
	}

	// A message larger than the first allocation that does arrive is read
	// whole.
	var buf bytes.Buffer
	const size = 3*readChunk + 100
	opts := map[string]string{"k": strings.Repeat("v", size)}
	if err := WriteMessage(&buf, TypeSubmit, Submit{Options: opts}); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var sub Submit
	if err := m.Decode(TypeSubmit, &sub); err != nil || len(sub.Options["k"]) != size {
		t.Fatalf("large message read as %d bytes, %v", len(sub.Options["k"]), err)
	}
}

// fileList returns n result entries whose names are nameLen bytes long.
func fileList(n, nameLen int) []FileSum {
	fs := make([]FileSum, n)
	for i := range fs {
		name := fmt.Sprintf("%0*d", nameLen, i)
		fs[i] = FileSum{Name: name, Size: 1 << 40, SHA256: strings.Repeat("0", SHA256HexLen)}
	}
	return fs
}

// TestFileListsFit checks the arithmetic behind MaxFileListBytes: a job
// with both lists at the cap and every option at its cap fits in one
// message, and so does a result manifest (the job and its results again).
func TestFileListsFit(t *testing.T) {
	t.Parallel()
	// Names of '<', which JSON escapes to six bytes each.
	entry := func(i int) FileSum {
		return FileSum{Name: fmt.Sprintf("%06d%s", i, strings.Repeat("<", 150)), Size: 1 << 40, SHA256: strings.Repeat("0", 64)}
	}
	per := FileListSize([]FileSum{entry(0), entry(1)}) - FileListSize([]FileSum{entry(0)})
	var list []FileSum
	for i := range MaxFileListBytes / per {
		list = append(list, entry(i))
	}
	if n := FileListSize(list); n > MaxFileListBytes || n < MaxFileListBytes-2*per {
		t.Fatalf("list of %d bytes, want just under %d", n, MaxFileListBytes)
	}
	opts := map[string]string{}
	for i := range MaxOptions {
		opts[fmt.Sprintf("K%02d", i)] = strings.Repeat("<", MaxOptionsTotal/MaxOptions-3)
	}
	if err := ValidateOptions(opts); err != nil {
		t.Fatal(err)
	}
	job := JobInfo{JobID: strings.Repeat("a", 26), State: "succeeded", Files: list, Results: list, Options: opts,
		Error: strings.Repeat("<", 4096), SubmissionID: strings.Repeat("a", MaxSubmissionID)}
	if err := WriteMessage(io.Discard, TypeJob, job); err != nil {
		t.Errorf("a job with both file lists at the cap: %v", err)
	}
	if err := WriteMessage(io.Discard, TypeResults, Results{Job: job, Files: list}); err != nil {
		t.Errorf("a result manifest with its lists at the cap: %v", err)
	}
	if n := FileListSize(fileList(10_000, 20)); n > MaxFileListBytes {
		t.Errorf("10,000 files with 20-byte names take %d bytes, over the cap of %d", n, MaxFileListBytes)
	}
}

// TestFitQueue checks that a queue of large jobs is cut to one message.
func TestFitQueue(t *testing.T) {
	t.Parallel()
	list := fileList(5000, 40) // about 0.6 MB per job
	q := &QueueReply{Unavailable: []string{"127.0.0.1:1"}}
	for range 40 {
		q.Jobs = append(q.Jobs, JobInfo{JobID: strings.Repeat("a", 26), State: "queued", Files: list})
	}
	FitQueue(q)
	if len(q.Jobs) == 0 || len(q.Jobs) == 40 {
		t.Fatalf("FitQueue kept %d of 40 jobs", len(q.Jobs))
	}
	if err := WriteMessage(io.Discard, TypeQueueReply, q); err != nil {
		t.Errorf("fitted queue: %v", err)
	}
}
