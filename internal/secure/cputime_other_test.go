//go:build !unix

package secure

import "time"

// processCPU is 0 where getrusage is missing: the benchmarks then report
// no cpu-ns/B worth reading.
func processCPU() time.Duration { return 0 }
