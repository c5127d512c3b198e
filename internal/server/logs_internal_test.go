package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTailLogRotated reads records across the files a rename-style
// rotation leaves: recon.log, recon.log.1, recon.log.2 … (compressed ones
// are not read).
func TestTailLogRotated(t *testing.T) {
	const jobA, jobB = "aaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbb"
	rec := func(name string, job string) string {
		return fmt.Sprintf(`{"msg":%q,"job_id":%q}`, name, job)
	}
	// A script output record of the longest line, every byte a control
	// character (6 bytes each in JSON): it is returned whole.
	long := fmt.Sprintf(`{"msg":"script output","job_id":%q,"stream":"stdout","line":"%s"}`, jobA, strings.Repeat(`\u0001`, 4096))
	file := func(recs ...string) string { return strings.Join(recs, "\n") + "\n" }
	cur := file(rec("c1", jobA), rec("c2", jobB), rec("c3", jobA))
	one := file(rec("b1", jobB), rec("b2", jobA), long)
	two := file(rec("a1", jobA), rec("a2", jobB))
	gz := "\x1f\x8b not a log"
	const (
		dir  = "\x00dir"  // make a directory
		link = "\x00link" // make a symlink to recon.log
	)
	tests := []struct {
		name  string
		files map[string]string // name → content
		n     int
		job   string
		want  []string
		err   bool
	}{
		{name: "current only suffices", files: map[string]string{"recon.log": cur, "recon.log.1": one}, n: 2,
			want: []string{rec("c2", jobB), rec("c3", jobA)}},
		{name: "into .1", files: map[string]string{"recon.log": cur, "recon.log.1": one}, n: 5,
			want: []string{rec("b2", jobA), long, rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "all files, not .gz", files: map[string]string{"recon.log": cur, "recon.log.1": one, "recon.log.2": two, "recon.log.3.gz": gz}, n: 100,
			want: []string{rec("a1", jobA), rec("a2", jobB), rec("b1", jobB), rec("b2", jobA), long, rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "job filter across files", files: map[string]string{"recon.log": cur, "recon.log.1": one, "recon.log.2": two}, n: 3, job: jobB,
			want: []string{rec("a2", jobB), rec("b1", jobB), rec("c2", jobB)}},
		{name: "current missing after rotation", files: map[string]string{"recon.log.1": one, "recon.log.2": two}, n: 2,
			want: []string{rec("b2", jobA), long}},
		{name: "current empty after rotation", files: map[string]string{"recon.log": "", "recon.log.1": one}, n: 1,
			want: []string{long}},
		{name: "stops at a gap", files: map[string]string{"recon.log": cur, "recon.log.2": two}, n: 100,
			want: []string{rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "stops at .gz", files: map[string]string{"recon.log": cur, "recon.log.1": one, "recon.log.2.gz": gz, "recon.log.3": two}, n: 100,
			want: []string{rec("b1", jobB), rec("b2", jobA), long, rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "stops at a directory", files: map[string]string{"recon.log": cur, "recon.log.1": dir, "recon.log.2": two}, n: 100,
			want: []string{rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "same file twice read once", files: map[string]string{"recon.log": cur, "recon.log.1": link}, n: 100,
			want: []string{rec("c1", jobA), rec("c2", jobB), rec("c3", jobA)}},
		{name: "bounded number of rotated files", files: func() map[string]string {
			m := map[string]string{"recon.log": file(rec("c", jobA))}
			for i := 1; i <= maxRotatedLogs+1; i++ {
				m[fmt.Sprintf("recon.log.%d", i)] = file(rec(fmt.Sprint(i), jobA))
			}
			return m
		}(), n: 1000, want: func() []string {
			var w []string
			for i := maxRotatedLogs; i >= 1; i-- {
				w = append(w, rec(fmt.Sprint(i), jobA))
			}
			return append(w, rec("c", jobA))
		}()},
		{name: "no log at all", files: map[string]string{}, n: 10, err: true},
		{name: "current a directory", files: map[string]string{"recon.log": dir, "recon.log.1": one}, n: 10, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			path := filepath.Join(d, "recon.log")
			for name, content := range tt.files {
				p := filepath.Join(d, name)
				var err error
				switch content {
				case dir:
					err = os.Mkdir(p, 0o700)
				case link:
					err = os.Symlink(path, p)
				default:
					err = os.WriteFile(p, []byte(content), 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := tailLog(path, tt.n, tt.job)
			if tt.err {
				if err == nil {
					t.Fatalf("tailLog(n=%d, job=%q) = %d records, want an error", tt.n, tt.job, len(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("tailLog(n=%d, job=%q) (-want +got):\n%s", tt.n, tt.job, diff)
			}
		})
	}
}
