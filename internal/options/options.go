// Package options holds the rules for a job's options: the key/value pairs
// a client sends with a job, which the script receives as environment
// variables (RECON_OPT_<KEY>). The protocol checks them when a job is
// submitted and the runner again before it starts the script; both take
// the rules from here, so the two checks cannot drift apart.
//
// The package imports nothing of recon, so that the protocol (the network
// side) and the runner (which knows no network) can both use it.
package options

import (
	"fmt"
	"strings"
)

// Limits of the options of one job.
const (
	MaxCount      = 64      // options per job
	MaxKeyLen     = 64      // bytes of a key
	MaxValueBytes = 4 << 10 // bytes of a value
)

// Check checks job options: at most MaxCount, keys of 1 to MaxKeyLen ASCII
// letters, digits or _ that stay distinct when upper-cased (they become
// environment variable names), values of at most MaxValueBytes of any
// bytes but NUL.
func Check(opts map[string]string) error {
	if len(opts) > MaxCount {
		return fmt.Errorf("too many options: %d, at most %d", len(opts), MaxCount)
	}
	seen := make(map[string]string, len(opts))
	for k, v := range opts {
		if !validKey(k) {
			if len(k) > 80 { // a key may be as long as a message: quote its start
				k = k[:80] + "…"
			}
			return fmt.Errorf("option key %q is not valid: use 1 to %d letters, digits or _", k, MaxKeyLen)
		}
		up := strings.ToUpper(k)
		if other, dup := seen[up]; dup {
			return fmt.Errorf("option keys %q and %q differ only in case", other, k)
		}
		seen[up] = k
		if len(v) > MaxValueBytes {
			return fmt.Errorf("option %s: value is %d bytes, at most %d", k, len(v), MaxValueBytes)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("option %s: value contains a NUL byte", k)
		}
	}
	return nil
}

// validKey reports whether k has 1 to MaxKeyLen bytes, each an ASCII
// letter, digit or _.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
