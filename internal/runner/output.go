package runner

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
)

// Log messages of script output.
const (
	msgOutput    = "script output"
	msgCapped    = "script output limit reached; further output is discarded"
	msgDiscarded = "script output discarded"
)

// lineLogger is the io.Writer behind one of the script's output streams.
// It splits output into lines, logs each line (at most MaxLineBytes of it)
// until maxLog line bytes have been logged, counts everything and keeps the
// last tailMax bytes. Its memory is bounded whatever the script writes.
//
// exec.Cmd calls Write from one goroutine and has finished with it when
// Wait returns; flush, summary and tailString are called after that.
type lineLogger struct {
	ctx    context.Context
	log    *slog.Logger
	stream string
	maxLog int64

	line      []byte // current partial line, at most MaxLineBytes
	truncated bool   // current line exceeded MaxLineBytes
	logged    int64  // line bytes passed to log
	capped    bool   // logged reached maxLog: stop logging
	total     int64  // all bytes written
	discarded int64  // bytes not logged (beyond caps)

	tailMax int
	tail    []byte // last bytes of output, len ≤ 2*tailMax
}

func newLineLogger(ctx context.Context, log *slog.Logger, stream string, maxLog int64, tailMax int) *lineLogger {
	w := &lineLogger{ctx: ctx, log: log, stream: stream, maxLog: maxLog, tailMax: tailMax}
	if tailMax > 0 {
		w.tail = make([]byte, 0, 2*tailMax)
	}
	return w
}

// Write implements io.Writer. It never fails, so the script's output is
// always drained.
func (w *lineLogger) Write(p []byte) (int, error) {
	n := len(p)
	w.total += int64(n)
	w.keepTail(p)
	if w.capped {
		w.discarded += int64(n)
		return n, nil
	}
	for len(p) > 0 && !w.capped {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.appendLine(p)
			return n, nil
		}
		w.appendLine(p[:i])
		w.emit()
		p = p[i+1:]
	}
	w.discarded += int64(len(p))
	return n, nil
}

// appendLine adds b to the current line, up to MaxLineBytes.
func (w *lineLogger) appendLine(b []byte) {
	room := MaxLineBytes - len(w.line)
	if len(b) > room {
		w.discarded += int64(len(b) - room)
		b = b[:room]
		w.truncated = true
	}
	w.line = append(w.line, b...)
}

// emit logs the current line and starts a new one.
func (w *lineLogger) emit() {
	line := bytes.TrimSuffix(w.line, []byte("\r"))
	if w.logged+int64(len(line)) > w.maxLog {
		w.capped = true
		w.discarded += int64(len(w.line))
		w.log.LogAttrs(w.ctx, slog.LevelWarn, msgCapped,
			slog.String("stream", w.stream), slog.Int64("limit_bytes", w.maxLog))
	} else {
		w.logged += int64(len(line))
		attrs := []slog.Attr{slog.String("stream", w.stream), slog.String("line", strings.ToValidUTF8(string(line), "\uFFFD"))}
		if w.truncated {
			attrs = append(attrs, slog.Bool("truncated", true))
		}
		w.log.LogAttrs(w.ctx, slog.LevelInfo, msgOutput, attrs...)
	}
	w.line = w.line[:0]
	w.truncated = false
}

// flush logs a last line that has no newline.
func (w *lineLogger) flush() {
	switch {
	case w.capped:
		w.discarded += int64(len(w.line))
		w.line = w.line[:0]
	case len(w.line) > 0 || w.truncated:
		w.emit()
	}
}

// summary logs how much output was not logged, if any.
func (w *lineLogger) summary() {
	if w.discarded > 0 {
		w.log.LogAttrs(w.ctx, slog.LevelWarn, msgDiscarded,
			slog.String("stream", w.stream), slog.Int64("total_bytes", w.total), slog.Int64("discarded_bytes", w.discarded))
	}
}

// keepTail keeps the last tailMax bytes (at least) of the output.
func (w *lineLogger) keepTail(p []byte) {
	if w.tailMax == 0 {
		return
	}
	if len(p) >= w.tailMax {
		w.tail = append(w.tail[:0], p[len(p)-w.tailMax:]...)
		return
	}
	if len(w.tail)+len(p) > cap(w.tail) {
		keep := w.tail[len(w.tail)-(w.tailMax-len(p)):]
		w.tail = append(w.tail[:0], keep...)
	}
	w.tail = append(w.tail, p...)
}

// tailString returns the last lines of output: at most tailMax bytes,
// starting at a line boundary when the output was cut, valid UTF-8, without
// the final newline.
func (w *lineLogger) tailString() string {
	t := w.tail
	cut := w.total > int64(len(t))
	if len(t) > w.tailMax {
		t = t[len(t)-w.tailMax:]
		cut = true
	}
	t = bytes.TrimRight(t, "\r\n")
	if cut {
		if i := bytes.IndexByte(t, '\n'); i >= 0 && i < len(t)-1 {
			t = t[i+1:]
		}
	}
	return strings.ToValidUTF8(string(t), "\uFFFD")
}
