package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Limits of a BART image read by ReadCFL.
const (
	// MaxHeaderBytes caps a .hdr file: a comment line and one line of at
	// most 16 numbers.
	MaxHeaderBytes = 4 << 10
	// MaxDims is the number of dimensions BART writes (DIMS in BART).
	MaxDims = 16
	// MaxImagePixels caps the pixels of one image (all slices together):
	// 2^28 complex values are 2 GiB of .cfl.
	MaxImagePixels = 1 << 28
	// MaxSlices caps the slices of one series: one file each.
	MaxSlices = 4096
	// MaxPlaneSide caps the rows and columns of one slice (DICOM's Rows and
	// Columns are 16-bit).
	MaxPlaneSide = 1<<16 - 1
)

// Image is a BART image as Write takes it: the magnitude of each complex
// value, dimension 0 fastest (BART's column-major order). Dims[0] becomes
// the slices' Rows, Dims[1] their Columns, Dims[2] the slices of a 3D
// stack; every further dimension is 1.
type Image struct {
	Dims [3]int
	Mag  []float32
}

// Slices is the number of slices (Dims[2]).
func (im *Image) Slices() int { return im.Dims[2] }

// ReadCFL reads the BART image base.hdr + base.cfl (complex float32,
// little-endian) and returns its magnitude. It refuses an image whose
// dimensions past the third are not 1 (several echoes, coils or maps: only
// 2D images and 3D stacks are written), whose size passes the limits
// above, or whose .cfl does not hold exactly the values the header names.
func ReadCFL(base string) (*Image, error) {
	dims, err := readHeader(base + ".hdr")
	if err != nil {
		return nil, err
	}
	im := &Image{Dims: [3]int{dims[0], dims[1], dims[2]}}
	for i := 3; i < len(dims); i++ {
		if dims[i] != 1 {
			return nil, fmt.Errorf("%s.hdr: dimension %d has %d entries: only 2D images and 3D stacks (dimensions 0 to 2) can be written as DICOM", base, i, dims[i])
		}
	}
	switch {
	case im.Dims[0] > MaxPlaneSide || im.Dims[1] > MaxPlaneSide:
		return nil, fmt.Errorf("%s.hdr: a slice of %d x %d pixels: at most %d a side", base, im.Dims[0], im.Dims[1], MaxPlaneSide)
	case im.Dims[2] > MaxSlices:
		return nil, fmt.Errorf("%s.hdr: %d slices, at most %d", base, im.Dims[2], MaxSlices)
	}
	n := int64(im.Dims[0]) * int64(im.Dims[1]) * int64(im.Dims[2])
	if n > MaxImagePixels {
		return nil, fmt.Errorf("%s.hdr: %d pixels, at most %d", base, n, MaxImagePixels)
	}
	f, err := os.Open(base + ".cfl")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != n*8 {
		return nil, fmt.Errorf("%s.cfl: %d bytes, the header's %v dimensions need %d", base, st.Size(), dims, n*8)
	}
	im.Mag = make([]float32, n)
	r := bufio.NewReaderSize(f, 1<<20)
	var buf [8]byte
	for i := range im.Mag {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return nil, fmt.Errorf("%s.cfl: %w", base, err)
		}
		re := math.Float32frombits(binary.LittleEndian.Uint32(buf[0:4]))
		imag := math.Float32frombits(binary.LittleEndian.Uint32(buf[4:8]))
		m := float32(math.Hypot(float64(re), float64(imag)))
		if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			m = 0 // written as black, never as a bright outlier that sets the scale
		}
		im.Mag[i] = m
	}
	return im, nil
}

// readHeader reads a BART .hdr: lines starting with '#' are comments, the
// first other line holds the dimensions, each at least 1. Fewer than three
// are padded with 1.
func readHeader(path string) ([]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxHeaderBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxHeaderBytes {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, MaxHeaderBytes)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) > MaxDims {
			return nil, fmt.Errorf("%s: %d dimensions, at most %d", path, len(fields), MaxDims)
		}
		dims := make([]int, 0, max(3, len(fields)))
		for _, fl := range fields {
			d, err := strconv.Atoi(fl)
			if err != nil || d < 1 || d > MaxImagePixels {
				return nil, fmt.Errorf("%s: dimension %q is not a whole number from 1 to %d", path, fl, MaxImagePixels)
			}
			dims = append(dims, d)
		}
		for len(dims) < 3 {
			dims = append(dims, 1)
		}
		return dims, nil
	}
	return nil, errors.New(path + ": no dimensions")
}
