package dicom_test

import (
	"encoding/binary"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// writeCFL writes a BART pair base.hdr/base.cfl whose value i is
// value(i) + 0.5i·value(i) (magnitude value(i)·√1.25).
func writeCFL(t *testing.T, base string, dims []int, value func(i int) float32) {
	t.Helper()
	n := 1
	var hdr strings.Builder
	hdr.WriteString("# Dimensions\n")
	for i, d := range dims {
		n *= d
		if i > 0 {
			hdr.WriteByte(' ')
		}
		hdr.WriteString(strconv.Itoa(d))
	}
	hdr.WriteByte('\n')
	if err := os.WriteFile(base+".hdr", []byte(hdr.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8*n)
	for i := range n {
		v := value(i)
		binary.LittleEndian.PutUint32(buf[8*i:], math.Float32bits(v))
		binary.LittleEndian.PutUint32(buf[8*i+4:], math.Float32bits(v/2))
	}
	if err := os.WriteFile(base+".cfl", buf, 0o600); err != nil {
		t.Fatal(err)
	}
}
