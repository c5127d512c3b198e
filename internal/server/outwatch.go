package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"
)

// outputCheckInterval is how often a running job's output is measured
// against MAX_RESULT_BYTES, and the free space of its disk against
// MIN_FREE_DISK_MB. A walk of the output that takes longer spaces the
// checks to outputCheckSpacing times its duration, so that measuring takes
// at most a fifth of a core per job however many files the script writes.
const (
	outputCheckInterval = 250 * time.Millisecond
	outputCheckSpacing  = 4
)

// outputStop is why a job was stopped for its output: the cause given to
// the job's context by the watcher, and the job's error.
type outputStop struct{ msg string }

func (e *outputStop) Error() string { return e.msg }

// outputGuard measures one job's output directory.
type outputGuard struct {
	dir      string
	maxBytes int64 // MAX_RESULT_BYTES
	floor    int64 // MIN_FREE_DISK_MB, in bytes
	last     int64 // the output's size at the last check
}

// check measures the output once. It returns why the script must stop: its
// output is over maxBytes, or the output grew since the last check while
// its disk has less than floor free (or nothing) left. A job whose output
// does not grow is not stopped for a disk that something else filled.
func (g *outputGuard) check(running bool) *outputStop {
	size := dirSize(g.dir)
	grew := size > g.last
	g.last = size
	if running && size > g.maxBytes {
		return &outputStop{msg: fmt.Sprintf("the job's output reached MAX_RESULT_BYTES (%d) while the script ran (%d bytes): the script was stopped and its output removed",
			g.maxBytes, size)}
	}
	free, err := freeBytes(g.dir)
	if err != nil || !grew || (free >= g.floor && free > 0) {
		return nil
	}
	if running {
		return &outputStop{msg: fmt.Sprintf("the disk holding job outputs is full (%d bytes free, MIN_FREE_DISK_MB keeps %d): the script was stopped and its output removed",
			free, g.floor)}
	}
	return &outputStop{msg: fmt.Sprintf("the disk holding job outputs is full (%d bytes free, MIN_FREE_DISK_MB keeps %d) after the script wrote to it: its output was removed",
		free, g.floor)}
}

// watchOutput measures the output directory of a job while its script
// runs, and stops the job, through stop, with an *outputStop as the cause
// when the output passes MAX_RESULT_BYTES or fills the disk (see check).
// The returned function, called once the script has ended, ends the
// watcher, waits for it, and returns why the job was stopped or, measured
// once more after a script that ended by itself, must fail; nil when the
// output is fine.
func (e *localExecutor) watchOutput(jobCtx context.Context, stop context.CancelCauseFunc, dir string) func() *outputStop {
	g := &outputGuard{dir: dir, maxBytes: e.cfg.MaxResultBytes, floor: e.cfg.MinFreeDiskBytes}
	ctx, cancel := context.WithCancel(jobCtx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTimer(outputCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			if why := g.check(true); why != nil {
				stop(why)
				return
			}
			t.Reset(max(outputCheckInterval, outputCheckSpacing*time.Since(start)))
		}
	})
	return func() *outputStop {
		cancel()
		wg.Wait()
		var why *outputStop
		if errors.As(context.Cause(jobCtx), &why) {
			return why
		}
		if jobCtx.Err() != nil { // cancelled, or the server is stopping
			return nil
		}
		return g.check(false)
	}
}

// dirSize is the total size of the regular files under dir. Files that
// vanish while it walks, and entries it cannot read, count as nothing.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}
