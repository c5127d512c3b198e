package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTailLog(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i := range 3000 {
		job := "aaaaaaaaaaaaaaaaaaaaaaaaaa"
		if i%3 == 0 {
			job = "bbbbbbbbbbbbbbbbbbbbbbbbbb"
		}
		// Records of varying length, so some cross the read chunks.
		lines = append(lines, fmt.Sprintf(`{"msg":"line %d","job_id":"%s","pad":"%s"}`, i, job, strings.Repeat("x", i%200)))
	}
	path := filepath.Join(dir, "recon.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var bOnly []string
	for i, l := range lines {
		if i%3 == 0 {
			bOnly = append(bOnly, l)
		}
	}
	tests := []struct {
		n    int
		job  string
		want []string
	}{
		{1, "", lines[2999:]},
		{50, "", lines[2950:]},
		{5000, "", lines},
		{10, "bbbbbbbbbbbbbbbbbbbbbbbbbb", bOnly[len(bOnly)-10:]},
		{2000, "bbbbbbbbbbbbbbbbbbbbbbbbbb", bOnly},
		{10, "cccccccccccccccccccccccccc", nil},
	}
	for _, tt := range tests {
		got, err := tailLog(path, tt.n, tt.job)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("tailLog(n=%d, job=%q) (-want +got):\n%s", tt.n, tt.job, diff)
		}
	}
}

func TestTailLogEdges(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, fmt.Sprint(len(content)))
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	// No final newline, blank lines, a long line (cut), a runaway line
	// (dropped).
	long := strings.Repeat("y", maxLogRecord+100)
	runaway := strings.Repeat("z", 20*maxLogRecord)
	p := write("{\"a\":1}\n\n{\"a\":2}\n" + runaway + "\n" + long + "\n{\"a\":3}")
	got, err := tailLog(p, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`{"a":1}`, `{"a":2}`, long[:maxLogRecord] + "…", `{"a":3}`}, got); diff != "" {
		t.Errorf("tailLog edges (-want +got):\n%s", diff)
	}
	if got, err := tailLog(write(""), 10, ""); err != nil || len(got) != 0 {
		t.Errorf("empty log: %v, %v", got, err)
	}
	if _, err := tailLog(filepath.Join(dir, "missing"), 10, ""); err == nil {
		t.Error("missing log: no error")
	}
}
