package dicom

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
)

// UUIDRoot is the root of UIDs derived from a UUID (PS3.5 B.2): 2.25.
// followed by the UUID as one decimal integer. It needs no registered root.
const UUIDRoot = "2.25"

// MaxUIDLen is the longest UID (PS3.5 9.1).
const MaxUIDLen = 64

// minUIDRandomDigits is how many random decimal digits a UID under a site's
// root keeps at least (about 66 bits): CheckRoot refuses a longer root.
const minUIDRandomDigits = 20

// ValidUID reports whether s is a UID: components of digits separated by
// dots, none empty and none with a leading zero (but "0" itself), at most
// MaxUIDLen characters.
func ValidUID(s string) bool {
	if s == "" || len(s) > MaxUIDLen {
		return false
	}
	for _, c := range strings.Split(s, ".") {
		if c == "" || strings.Trim(c, "0123456789") != "" || (len(c) > 1 && c[0] == '0') {
			return false
		}
	}
	return true
}

// CheckRoot checks a root for new UIDs (DICOM_UID_ROOT): a UID short enough
// to leave room for a dot and minUIDRandomDigits digits.
func CheckRoot(root string) error {
	if !ValidUID(root) {
		return fmt.Errorf("%q is not a UID root: digits in components separated by dots, no leading zeros", root)
	}
	if len(root) > MaxUIDLen-1-minUIDRandomDigits {
		return fmt.Errorf("the UID root %q is %d characters: at most %d leave room for %d unique digits", root, len(root), MaxUIDLen-1-minUIDRandomDigits, minUIDRandomDigits)
	}
	return nil
}

// NewUID returns a new UID under root: under UUIDRoot, a random (version 4)
// UUID as an integer; under any other root, as many random decimal digits
// as fit in MaxUIDLen, at most 39 (128 bits).
func NewUID(root string) (string, error) {
	if err := CheckRoot(root); err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new uid: %w", err)
	}
	if root == UUIDRoot {
		b[6] = b[6]&0x0f | 0x40 // version 4
		b[8] = b[8]&0x3f | 0x80 // variant 10
		return root + "." + new(big.Int).SetBytes(b[:]).String(), nil
	}
	n := new(big.Int).SetBytes(b[:]).String()
	if room := MaxUIDLen - len(root) - 1; len(n) > room {
		n = strings.TrimLeft(n[:room], "0")
		if n == "" {
			n = "1"
		}
	}
	return root + "." + n, nil
}
