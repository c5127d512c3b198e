package audit

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTest(t *testing.T, dir string, rotate int64) *Log {
	t.Helper()
	l, err := Open(context.Background(), filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "state", "audit.db"), nil, Options{RotateBytes: rotate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		err := l.Append(context.Background(), Record{Kind: KindSubmit, Identity: "default", JobID: strings.Repeat("a", 25) + string(rune('a'+i%26)),
			Files: []File{{Name: "scan.dat", Size: int64(i), SHA256: Genesis}}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mustVerify(t *testing.T, l *Log) *Report {
	t.Helper()
	rep, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyIntact(t *testing.T) {
	l := openTest(t, t.TempDir(), 0)
	appendN(t, l, 10)
	rep := mustVerify(t, l)
	if !rep.OK || rep.Records != 11 || rep.FirstSeq != 1 || rep.LastSeq != 11 || rep.HeadSeq != 11 {
		t.Fatalf("report %+v, want intact with 11 records", rep)
	}
}

// TestVerifyTampered changes the file behind the log's back, each way
// the issue names, and checks that Verify names the first bad line.
func TestVerifyTampered(t *testing.T) {
	tests := []struct {
		name     string
		tamper   func(lines [][]byte) [][]byte
		wantLine int
		want     string
	}{
		{"edited line", func(ls [][]byte) [][]byte {
			ls[4] = bytes.Replace(ls[4], []byte(`"size":3`), []byte(`"size":4`), 1)
			return ls
		}, 5, "changed"},
		{"edited last line", func(ls [][]byte) [][]byte {
			ls[10] = bytes.Replace(ls[10], []byte(`"size":9`), []byte(`"size":8`), 1)
			return ls
		}, 11, "rewritten"},
		{"broken JSON", func(ls [][]byte) [][]byte {
			ls[2] = append([]byte("x"), ls[2]...)
			return ls
		}, 3, "not an audit record"},
		{"deleted line", func(ls [][]byte) [][]byte {
			return append(ls[:6:6], ls[7:]...)
		}, 7, "missing"},
		{"inserted line", func(ls [][]byte) [][]byte {
			// A forged record that chains to line 3, as the server's
			// would.
			forged := `{"seq":3,"time":"2026-12-07T20:00:00Z","kind":"cancel","identity":"x","prev":"` + LineHash(bytes.TrimSuffix(ls[1], []byte("\n"))) + `"}`
			forged = strings.Replace(forged, `"seq":3`, `"seq":4`, 1)
			forged = strings.Replace(forged, LineHash(bytes.TrimSuffix(ls[1], []byte("\n"))), LineHash(bytes.TrimSuffix(ls[2], []byte("\n"))), 1)
			out := append([][]byte{}, ls[:3]...)
			out = append(out, []byte(forged+"\n"))
			return append(out, ls[3:]...)
		}, 4, "inserted"},
		{"duplicated line", func(ls [][]byte) [][]byte {
			out := append([][]byte{}, ls[:3]...)
			out = append(out, ls[2])
			return append(out, ls[3:]...)
		}, 4, "repeats"},
		{"truncated tail", func(ls [][]byte) [][]byte {
			return ls[:8]
		}, 9, "cut off"},
		{"cut inside the last line", func(ls [][]byte) [][]byte {
			ls[10] = ls[10][:20]
			return ls
		}, 11, "incomplete"},
		{"wholly rewritten", func(ls [][]byte) [][]byte {
			// A valid chain of the same length, written by someone else.
			dir := t.TempDir()
			other := openTest(t, dir, 0)
			appendN(t, other, 10)
			other.Close()
			return readLines(t, filepath.Join(dir, "audit.jsonl"))
		}, 11, "rewritten"},
		{"emptied", func(ls [][]byte) [][]byte { return nil }, 1, "no record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := openTest(t, t.TempDir(), 0)
			appendN(t, l, 10)
			lines := readLines(t, l.Path())
			writeLines(t, l.Path(), tt.tamper(lines))
			// The log's own idea of the size is what it wrote; a shorter
			// file is read as it is.
			st, _ := os.Stat(l.Path())
			l.mu.Lock()
			l.size = st.Size()
			l.mu.Unlock()
			rep := mustVerify(t, l)
			if rep.OK || rep.Line != tt.wantLine || !strings.Contains(rep.Reason, tt.want) {
				t.Fatalf("report %+v, want line %d failing with %q", rep, tt.wantLine, tt.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 2000)
	appendN(t, l, 30)
	rot, err := rotated(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(rot) < 3 {
		t.Fatalf("%d rotated files, want at least 3", len(rot))
	}
	rep := mustVerify(t, l)
	if !rep.OK || rep.Records != 31 || rep.Files != len(rot)+1 {
		t.Fatalf("report %+v, want intact over %d files", rep, len(rot)+1)
	}
	var n int
	l.Read(context.Background(), Filter{}, func([]byte) error { n++; return nil })
	if n != 31 {
		t.Fatalf("Read gave %d records, want 31", n)
	}

	// An edit in a rotated file is named there.
	lines := readLines(t, rot[1].path)
	lines[1] = bytes.Replace(lines[1], []byte(`"identity":"default"`), []byte(`"identity":"someone"`), 1)
	orig := readLines(t, rot[1].path)
	writeLines(t, rot[1].path, lines)
	rep = mustVerify(t, l)
	if rep.OK || rep.File != filepath.Base(rot[1].path) || rep.Line != 2 {
		t.Fatalf("after an edit in %s line 2: report %+v", filepath.Base(rot[1].path), rep)
	}
	writeLines(t, rot[1].path, orig)
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("restored: %+v", rep)
	}

	// A middle rotated file removed is a gap.
	os.Rename(rot[1].path, filepath.Join(dir, "aside"))
	rep = mustVerify(t, l)
	if rep.OK || rep.File != filepath.Base(rot[2].path) || rep.Line != 1 || !strings.Contains(rep.Reason, "missing") {
		t.Fatalf("without %s: report %+v", filepath.Base(rot[1].path), rep)
	}
	os.Rename(filepath.Join(dir, "aside"), rot[1].path)

	// The oldest removed (retention) is a note, not a failure.
	os.Remove(rot[0].path)
	rep = mustVerify(t, l)
	if !rep.OK || rep.FirstSeq != rot[1].first || rep.Note == "" {
		t.Fatalf("without the oldest file: report %+v", rep)
	}

	// Reopened, the chain goes on across the files.
	l.Close()
	l = openTest(t, dir, 2000)
	appendN(t, l, 5)
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("after a restart: %+v", rep)
	}
}

// TestReopenCompletes: a server that stopped between committing the head
// and writing the line finds the record missing and appends it.
func TestReopenCompletes(t *testing.T) {
	for _, cut := range []string{"whole line", "half line"} {
		t.Run(cut, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, dir, 0)
			appendN(t, l, 3)
			l.Close()
			lines := readLines(t, l.Path())
			last := len(lines) - 2 // the final element is empty
			if cut == "whole line" {
				lines = lines[:last]
			} else {
				lines[last] = lines[last][:len(lines[last])/2]
				lines = lines[:last+1]
			}
			writeLines(t, l.Path(), lines)
			l = openTest(t, dir, 0)
			// 3 records, a start record at each open.
			if rep := mustVerify(t, l); !rep.OK || rep.Records != 5 {
				t.Fatalf("report %+v, want intact with 5 records", rep)
			}
		})
	}
}

// TestReopenAfterTamper: the chain goes on from the head, and the
// damage stays visible.
func TestReopenAfterTamper(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 0)
	appendN(t, l, 5)
	l.Close()
	lines := readLines(t, l.Path())
	writeLines(t, l.Path(), lines[:3])
	l = openTest(t, dir, 0)
	rep := mustVerify(t, l)
	if rep.OK || rep.Line != 4 || !strings.Contains(rep.Reason, "missing") {
		t.Fatalf("report %+v, want line 4: records missing", rep)
	}
}

func TestAppendFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 0)
	appendN(t, l, 2)
	// A file that cannot be written: swap in one opened read-only.
	l.mu.Lock()
	good := l.f
	ro, err := os.Open(l.path)
	if err != nil {
		t.Fatal(err)
	}
	l.f = ro
	l.mu.Unlock()
	if err := l.Append(context.Background(), Record{Kind: KindAdmin, Command: "admin_status"}); err == nil {
		t.Fatal("Append to a read-only file succeeded")
	}
	l.mu.Lock()
	l.f = good
	l.mu.Unlock()
	ro.Close()
	appendN(t, l, 1)
	if rep := mustVerify(t, l); !rep.OK || rep.Records != 4 {
		t.Fatalf("report %+v, want intact with 4 records", rep)
	}
}

func TestFailuresBounded(t *testing.T) {
	l := openTest(t, t.TempDir(), 0)
	f := NewFailures(nil)
	a := netip.MustParseAddr("127.0.0.1")
	for range 10_000 {
		f.Add(a)
	}
	for i := range MaxFailurePeers + 10 {
		f.Add(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	if len(f.peers) != MaxFailurePeers {
		t.Fatalf("%d peers counted, want the cap %d", len(f.peers), MaxFailurePeers)
	}
	if err := f.Flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	var n, other int
	l.Read(context.Background(), Filter{}, func(line []byte) error {
		r, _ := Parse(line)
		if r.Kind == KindAuthFailures {
			n++
			if r.Peer == "127.0.0.1" && r.Failures != 10_000 {
				t.Errorf("127.0.0.1: %d failures, want 10000", r.Failures)
			}
			if r.Peer == OtherPeers {
				other = r.Failures
			}
		}
		return nil
	})
	if n != MaxFailurePeers+1 || other != 11 {
		t.Fatalf("%d summaries (other: %d failures), want %d and 11", n, other, MaxFailurePeers+1)
	}
	// Nothing new: nothing written.
	if err := f.Flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, l); rep.Records != uint64(n+1) {
		t.Fatalf("%d records after an empty flush, want %d", rep.Records, n+1)
	}
}

func TestParse(t *testing.T) {
	ok := `{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"` + Genesis + `"}`
	tests := []struct {
		line string
		want string // "" = valid
	}{
		{ok, ""},
		{`{"seq":2,"time":"2026-12-07T20:00:00Z","kind":"submit","identity":"a","files":[{"name":"x","size":1,"sha256":"` + Genesis + `"}],"prev":"` + Genesis + `"}`, ""},
		{"", "EOF"},
		{"null", "no seq"},
		{`{"seq":0,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"` + Genesis + `"}`, "no seq"},
		{`{"seq":1,"kind":"start","prev":"` + Genesis + `"}`, "no time"},
		{`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"boom","prev":"` + Genesis + `"}`, "unknown kind"},
		{`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"00"}`, "not a SHA-256"},
		{`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"` + strings.ToUpper(strings.Repeat("a", 64)) + `"}`, "not a SHA-256"},
		{`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"` + Genesis + `","key":"x"}`, "unknown field"},
		{ok + ok, "data after"},
		{ok + " x", "data after"},
		{`{"seq":-1}`, "cannot unmarshal"},
		{"[1]", "cannot unmarshal"},
		{strings.Repeat(" ", MaxRecordBytes+1), "at most"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.line))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Parse(%.60q) = %v, want a record", tt.line, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Parse(%.60q) = %v, want an error with %q", tt.line, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"start","prev":"` + Genesis + `"}`))
	f.Add([]byte(`{"seq":3,"time":"2026-12-07T20:00:00.5+01:00","kind":"keys_reload","added":["a"],"removed":["b"],"prev":"` + Genesis + `"}`))
	f.Add([]byte(`{"seq":1,"time":"2026-12-07T20:00:00Z","kind":"auth_failures","peer":"127.0.0.1","failures":3,"first":"2026-12-07T20:00:00Z","last":"2026-12-07T20:00:01Z","prev":"` + Genesis + `"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := Parse(line)
		if err != nil {
			return
		}
		if r.Seq == 0 || !isHash(r.Prev) || !kinds[r.Kind] || r.Time.IsZero() {
			t.Fatalf("Parse accepted %q as %+v", line, r)
		}
	})
}

func TestEachLineLong(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	in := "a\n" + long + "\nb"
	var got []string
	var completes []bool
	eachLine(context.Background(), strings.NewReader(in), func(line []byte, n int, complete bool) error {
		got = append(got, string(line))
		completes = append(completes, complete)
		return nil
	})
	if len(got) != 3 || got[0] != "a" || got[1] != long || got[2] != "b" || !completes[1] || completes[2] {
		t.Fatalf("eachLine gave %d lines, completes %v", len(got), completes)
	}
	_ = time.Second
}

// TestLostHead: a state directory reset (the head gone) leaves the chain
// going on from the file's last record.
func TestLostHead(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 0)
	appendN(t, l, 3)
	l.Close()
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, dir, 0)
	appendN(t, l, 1)
	if rep := mustVerify(t, l); !rep.OK || rep.Records != 6 {
		t.Fatalf("report %+v, want intact with 6 records", rep)
	}
}

// BenchmarkAppend is the cost of one durable record (the head committed,
// the line written and fsynced): what each audited action waits for.
func BenchmarkAppend(b *testing.B) {
	dir := b.TempDir()
	l, err := Open(context.Background(), filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit.db"), nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := Record{Kind: KindAuth, Role: "client", Identity: "default", Peer: "127.0.0.1:40000"}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
