// Package dicom writes a reconstruction's image as DICOM MR Image Storage
// files that a PACS accepts (one file per slice, one series per job), takes
// the series' identity from the job's options, and reads those options from
// a DICOM image of the same exam (ReadRef) so the images join the scanner's
// study and frame of reference.
//
// Files are written by a small writer of its own (explicit VR little
// endian, every attribute's VR given where it is listed), and a reference
// file is read by a small reader of its own (ref.go), bounded before it
// allocates, since it may come from anywhere.
package dicom

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Fixed values of every file written.
const (
	// MRImageStorage is the SOP Class of every file written.
	MRImageStorage = "1.2.840.10008.5.1.4.1.1.4"
	// ExplicitVRLittleEndian is the transfer syntax of every file written.
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
	// ImplementationClassUID names recon's writer in each file's meta
	// header (a UUID-derived UID, made once).
	ImplementationClassUID = "2.25.171451569669212481857554296165286696603"
	// ImplementationVersionName goes with it (at most 16 characters).
	ImplementationVersionName = "RECON"
	// maxStoredValue is the brightest pixel: 16 bits stored.
	maxStoredValue = 1<<16 - 1
)

// Series is what Write needs besides the image.
type Series struct {
	Identity Identity
	Geometry Geometry
	// UIDRoot is the root of the new UIDs (DICOM_UID_ROOT); "" is UUIDRoot.
	UIDRoot string
	// JobID and Method name the reconstruction in SeriesDescription (unless
	// the identity gives one) and DerivationDescription.
	JobID, Method string
	// Software is recon's version, for SoftwareVersions.
	Software string
	// Now is the time of the series' creation (the zero value: time.Now).
	Now time.Time
}

// Write writes img as one MR Image Storage file per slice and returns their
// paths: prefix.dcm for a single slice, prefix-0000.dcm, prefix-0001.dcm
// and so on for a stack (numbered from 0, as bart toimg numbers its PNGs;
// InstanceNumber counts from 1). The slices share one new Series Instance
// UID and one Frame of Reference (the identity's, else new), and the study
// (the identity's, else new). Pixels are the magnitude scaled so that the
// stack's brightest is 65535.
func Write(prefix string, img *Image, s Series) ([]string, error) {
	if img.Dims[0] < 1 || img.Dims[1] < 1 || img.Dims[2] < 1 || len(img.Mag) != img.Dims[0]*img.Dims[1]*img.Dims[2] {
		return nil, fmt.Errorf("image of %v dimensions with %d values", img.Dims, len(img.Mag))
	}
	root := s.UIDRoot
	if root == "" {
		root = UUIDRoot
	}
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	now := s.Now
	if now.IsZero() {
		now = time.Now()
	}
	id := s.Identity
	newUID := func(dst *string) error {
		if *dst != "" {
			return nil
		}
		u, err := NewUID(root)
		*dst = u
		return err
	}
	var series string
	for _, dst := range []*string{&id.StudyInstanceUID, &id.FrameOfReferenceUID, &series} {
		if err := newUID(dst); err != nil {
			return nil, err
		}
	}
	if s.Identity.StudyInstanceUID == "" && id.StudyID == "" {
		id.StudyID = PlaceholderStudyID // a study of recon's own
	}
	if id.StudyDate == "" && id.StudyTime == "" {
		id.StudyDate, id.StudyTime = da(now), tm(now)
	}
	method := s.Method
	if method == "" {
		method = "reconstruction"
	}
	desc := id.SeriesDescription
	if desc == "" {
		desc = truncRunes("recon "+method, 64)
	}
	derivation := truncRunes(fmt.Sprintf("recon %s reconstruction of raw data, job %s", method, s.JobID), 1024)
	comments := "recon " + method + " reconstruction"
	if id.Placeholder {
		comments += "; NOT A REAL PATIENT: no patient identity was given with the job (placeholder)"
	}

	rows, cols, n := img.Dims[0], img.Dims[1], img.Dims[2]
	rowSp, colSp := DefaultPixelSpacingMM, DefaultPixelSpacingMM
	if s.Geometry.FOVRows > 0 {
		rowSp = s.Geometry.FOVRows / float64(rows)
	}
	if s.Geometry.FOVCols > 0 {
		colSp = s.Geometry.FOVCols / float64(cols)
	}
	thick := DefaultSliceThicknessMM
	if s.Geometry.SliceThickness > 0 {
		thick = s.Geometry.SliceThickness
	}
	acq := "2D"
	if n > 1 {
		acq = "3D"
	}

	var peak float32
	for _, m := range img.Mag {
		peak = max(peak, m)
	}
	scale := float64(0)
	if peak > 0 {
		scale = maxStoredValue / float64(peak)
	}
	window := 1
	if peak > 0 {
		window = maxStoredValue + 1
	}

	paths := make([]string, 0, n)
	plane := rows * cols
	pix := make([]byte, 2*plane)
	for k := 0; k < n; k++ {
		sop, err := NewUID(root)
		if err != nil {
			return paths, err
		}
		// BART's order is dimension 0 fastest; DICOM's row by row. Dimension
		// 0 is the row index (bart toimg makes it Rows), so pixel (r, c)
		// is value r + c*rows of the slice.
		sl := img.Mag[k*plane : (k+1)*plane]
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				v := uint16(math.Round(float64(sl[r+c*rows]) * scale))
				i := 2 * (r*cols + c)
				pix[i], pix[i+1] = byte(v), byte(v>>8)
			}
		}
		z := (float64(k) - float64(n-1)/2) * thick
		ipp := []string{ds(-float64(cols-1) / 2 * colSp), ds(-float64(rows-1) / 2 * rowSp), ds(z)}

		el := []elem{
			{0x0002, 0x0001, "OB", []byte{0, 1}},
			{0x0002, 0x0002, "UI", []string{MRImageStorage}},
			{0x0002, 0x0003, "UI", []string{sop}},
			{0x0002, 0x0010, "UI", []string{ExplicitVRLittleEndian}},
			{0x0002, 0x0012, "UI", []string{ImplementationClassUID}},
			{0x0002, 0x0013, "SH", []string{ImplementationVersionName}},
			{0x0008, 0x0005, "CS", []string{"ISO_IR 192"}},
			{0x0008, 0x0008, "CS", []string{"DERIVED", "PRIMARY", "OTHER"}},
			{0x0008, 0x0012, "DA", []string{da(now)}},
			{0x0008, 0x0013, "TM", []string{tm(now)}},
			{0x0008, 0x0016, "UI", []string{MRImageStorage}},
			{0x0008, 0x0018, "UI", []string{sop}},
			{0x0008, 0x0020, "DA", []string{id.StudyDate}},
			{0x0008, 0x0021, "DA", []string{da(now)}},
			{0x0008, 0x0023, "DA", []string{da(now)}},
			{0x0008, 0x0030, "TM", []string{id.StudyTime}},
			{0x0008, 0x0031, "TM", []string{tm(now)}},
			{0x0008, 0x0033, "TM", []string{tm(now)}},
			{0x0008, 0x0050, "SH", []string{id.AccessionNumber}},
			{0x0008, 0x0060, "CS", []string{"MR"}},
			{0x0008, 0x0070, "LO", []string{""}},
			{0x0008, 0x0090, "PN", []string{id.ReferringPhysician}},
			{0x0008, 0x103E, "LO", []string{desc}},
			{0x0008, 0x2111, "ST", []string{derivation}},
			{0x0010, 0x0010, "PN", []string{id.PatientName}},
			{0x0010, 0x0020, "LO", []string{id.PatientID}},
			{0x0010, 0x0030, "DA", []string{id.PatientBirthDate}},
			{0x0010, 0x0040, "CS", []string{id.PatientSex}},
			{0x0018, 0x0020, "CS", []string{"RM"}},
			{0x0018, 0x0021, "CS", []string{"NONE"}},
			{0x0018, 0x0022, "CS", []string{""}},
			{0x0018, 0x0023, "CS", []string{acq}},
			{0x0018, 0x0050, "DS", []string{ds(thick)}},
			{0x0018, 0x0080, "DS", []string{""}},
			{0x0018, 0x0081, "DS", []string{""}},
			{0x0018, 0x0088, "DS", []string{ds(thick)}},
			{0x0018, 0x0091, "IS", []string{""}},
			{0x0018, 0x1020, "LO", []string{truncRunes("recon "+s.Software, 64)}},
			{0x0018, 0x5100, "CS", []string{""}},
			{0x0020, 0x000D, "UI", []string{id.StudyInstanceUID}},
			{0x0020, 0x000E, "UI", []string{series}},
			{0x0020, 0x0010, "SH", []string{id.StudyID}},
			{0x0020, 0x0011, "IS", []string{strconv.Itoa(id.SeriesNumber)}},
			{0x0020, 0x0013, "IS", []string{strconv.Itoa(k + 1)}},
			{0x0020, 0x0032, "DS", ipp},
			{0x0020, 0x0037, "DS", []string{"1", "0", "0", "0", "1", "0"}},
			{0x0020, 0x0052, "UI", []string{id.FrameOfReferenceUID}},
			// Laterality: empty, "unknown" (dciodvfy needs it present).
			{0x0020, 0x0060, "CS", []string{""}},
			{0x0020, 0x1040, "LO", []string{""}},
			{0x0020, 0x1041, "DS", []string{ds(z)}},
			{0x0020, 0x4000, "LT", []string{comments}},
			{0x0028, 0x0002, "US", []int{1}},
			{0x0028, 0x0004, "CS", []string{"MONOCHROME2"}},
			{0x0028, 0x0010, "US", []int{rows}},
			{0x0028, 0x0011, "US", []int{cols}},
			{0x0028, 0x0030, "DS", []string{ds(rowSp), ds(colSp)}},
			{0x0028, 0x0100, "US", []int{16}},
			{0x0028, 0x0101, "US", []int{16}},
			{0x0028, 0x0102, "US", []int{15}},
			{0x0028, 0x0103, "US", []int{0}},
			{0x0028, 0x1050, "DS", []string{strconv.Itoa(window / 2)}},
			{0x0028, 0x1051, "DS", []string{strconv.Itoa(window)}},
			{0x7FE0, 0x0010, "OW", pix},
		}
		name := prefix + ".dcm"
		if n > 1 {
			name = fmt.Sprintf("%s-%04d.dcm", prefix, k)
		}
		if err := writeFile(name, el); err != nil {
			return paths, err
		}
		paths = append(paths, name)
	}
	return paths, nil
}

// elem is one attribute as Write lists it, in ascending tag order: its
// value representation, and its value as []string (a text VR; values are
// joined by a backslash), []int (US) or []byte (OB, OW).
type elem struct {
	group, element uint16
	vr             string
	value          any
}

// preamble is the start of every Part 10 file: 128 bytes of zeros, then
// the prefix "DICM".
var preamble = append(make([]byte, 128), "DICM"...)

// writeFile writes one Part 10 file in explicit VR little endian: the
// preamble, the file meta group (the elements of group 0002, led by their
// group length), then the dataset.
func writeFile(name string, el []elem) (err error) {
	var meta []byte
	rest := el
	for len(rest) > 0 && rest[0].group == 0x0002 {
		if meta, err = appendElem(meta, rest[0]); err != nil {
			return err
		}
		rest = rest[1:]
	}
	length, err := appendElem(nil, elem{0x0002, 0x0000, "UL", []uint32{uint32(len(meta))}})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<16)
	bw.Write(preamble)
	bw.Write(length)
	bw.Write(meta)
	var buf []byte
	for _, e := range rest {
		if buf, err = appendElem(buf[:0], e); err != nil {
			return err
		}
		bw.Write(buf)
	}
	return bw.Flush() // the first error of any write above
}

// appendElem appends e in explicit VR little endian to dst: tag, VR,
// length and value, the value padded to an even length (a UI with a NUL,
// other text with a space, bytes with a zero byte).
func appendElem(dst []byte, e elem) ([]byte, error) {
	var v []byte
	switch x := e.value.(type) {
	case []string:
		v = []byte(strings.Join(x, `\`))
		if len(v)%2 == 1 {
			pad := byte(' ')
			if e.vr == "UI" {
				pad = 0
			}
			v = append(v, pad)
		}
	case []int: // US
		for _, n := range x {
			if n < 0 || n > math.MaxUint16 {
				return nil, fmt.Errorf("attribute (%04X,%04X): %d is not an unsigned short", e.group, e.element, n)
			}
			v = binary.LittleEndian.AppendUint16(v, uint16(n))
		}
	case []uint32: // UL
		for _, n := range x {
			v = binary.LittleEndian.AppendUint32(v, n)
		}
	case []byte: // OB, OW
		v = x
		if len(v)%2 == 1 {
			v = append(v[:len(v):len(v)], 0)
		}
	default:
		return nil, fmt.Errorf("attribute (%04X,%04X): a value of type %T", e.group, e.element, e.value)
	}
	if len(e.vr) != 2 {
		return nil, fmt.Errorf("attribute (%04X,%04X): VR %q", e.group, e.element, e.vr)
	}
	dst = binary.LittleEndian.AppendUint16(dst, e.group)
	dst = binary.LittleEndian.AppendUint16(dst, e.element)
	dst = append(dst, e.vr...)
	switch e.vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		if uint64(len(v)) >= math.MaxUint32 {
			return nil, fmt.Errorf("attribute (%04X,%04X): %d bytes is too long", e.group, e.element, len(v))
		}
		dst = append(dst, 0, 0)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	default:
		if len(v) > math.MaxUint16 {
			return nil, fmt.Errorf("attribute (%04X,%04X): %d bytes is too long for VR %s", e.group, e.element, len(v), e.vr)
		}
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(v)))
	}
	return append(dst, v...), nil
}

func da(t time.Time) string { return t.Format("20060102") }
func tm(t time.Time) string { return t.Format("150405") }

// ds formats f as a decimal string of at most 16 characters.
func ds(f float64) string {
	if f == 0 {
		return "0"
	}
	for prec := 10; prec >= 0; prec-- {
		s := strconv.FormatFloat(f, 'f', prec, 64)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		if s == "-0" {
			s = "0"
		}
		if len(s) <= 16 {
			return s
		}
	}
	return strconv.FormatFloat(f, 'e', 6, 64)
}

func truncRunes(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}
