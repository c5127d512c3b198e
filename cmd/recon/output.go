package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// printer renders what a command found: as one indented JSON document
// with --json, else as text for a person. Every command's result goes
// through one; progress and errors go to standard error instead.
type printer struct {
	w    io.Writer
	json bool
}

// print writes v as JSON, or calls text with a writer whose first error
// sticks (and is returned here), so text need not check each write.
func (p printer) print(v any, text func(w io.Writer)) error {
	if p.json {
		return printJSON(p.w, v)
	}
	ew := &stickyWriter{w: p.w}
	text(ew)
	return ew.err
}

// stickyWriter passes writes on until one fails, then fails every later
// one with that error.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(b)
	s.err = err
	return n, err
}

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes a header and rows as columns aligned by text/tabwriter,
// two spaces apart. A cell holds no tab or newline (they are replaced by
// a space): it is one line of one column.
func table(w io.Writer, header []string, rows [][]string) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		clean := make([]string, len(cells))
		for i, c := range cells {
			clean[i] = strings.Map(func(r rune) rune {
				if r == '\t' || r == '\n' || r == '\r' {
					return ' '
				}
				return r
			}, c)
		}
		fmt.Fprintln(tw, strings.Join(clean, "\t"))
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	tw.Flush()
	// An empty last cell leaves the padding of the one before it.
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		if l != "" {
			fmt.Fprintln(w, strings.TrimRight(l, " \n"))
		}
	}
}

// humanBytes writes a size in bytes with binary units: 512 B, 1.5 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
