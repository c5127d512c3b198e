package xfer

import "runtime"

// testingMemStats holds the allocation count of the process.
type testingMemStats struct{ mallocs uint64 }

func (m *testingMemStats) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.mallocs = ms.Mallocs
}
