//go:build race

package secure

// raceEnabled reports whether the race detector is on: it makes sync.Pool
// drop buffers at random, so allocation counts are not meaningful.
const raceEnabled = true
