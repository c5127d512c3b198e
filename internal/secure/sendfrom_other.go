//go:build !linux

package secure

import "io"

// readRecords fills slots in order from r and returns the number of bytes
// read: all of them unless r ended or failed.
func readRecords(r io.Reader, slots [][]byte) (int, error) { return readFullSlots(r, slots) }
