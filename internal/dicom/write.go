// Package dicom writes a reconstruction's image as DICOM MR Image Storage
// files that a PACS accepts (one file per slice, one series per job), takes
// the series' identity from the job's options, and reads those options from
// a DICOM image of the same exam (ReadRef) so the images join the scanner's
// study and frame of reference.
//
// Files are written with github.com/suyashkumar/dicom; a reference file is
// read by a small reader of its own (ref.go), bounded before it allocates,
// since it may come from anywhere.
package dicom

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
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
			{0x0002, 0x0001, []byte{0, 1}},
			{0x0002, 0x0002, []string{MRImageStorage}},
			{0x0002, 0x0003, []string{sop}},
			{0x0002, 0x0010, []string{ExplicitVRLittleEndian}},
			{0x0002, 0x0012, []string{ImplementationClassUID}},
			{0x0002, 0x0013, []string{ImplementationVersionName}},
			{0x0008, 0x0005, []string{"ISO_IR 192"}},
			{0x0008, 0x0008, []string{"DERIVED", "PRIMARY", "OTHER"}},
			{0x0008, 0x0012, []string{da(now)}},
			{0x0008, 0x0013, []string{tm(now)}},
			{0x0008, 0x0016, []string{MRImageStorage}},
			{0x0008, 0x0018, []string{sop}},
			{0x0008, 0x0020, []string{id.StudyDate}},
			{0x0008, 0x0021, []string{da(now)}},
			{0x0008, 0x0023, []string{da(now)}},
			{0x0008, 0x0030, []string{id.StudyTime}},
			{0x0008, 0x0031, []string{tm(now)}},
			{0x0008, 0x0033, []string{tm(now)}},
			{0x0008, 0x0050, []string{id.AccessionNumber}},
			{0x0008, 0x0060, []string{"MR"}},
			{0x0008, 0x0070, []string{""}},
			{0x0008, 0x0090, []string{id.ReferringPhysician}},
			{0x0008, 0x103E, []string{desc}},
			{0x0008, 0x2111, []string{derivation}},
			{0x0010, 0x0010, []string{id.PatientName}},
			{0x0010, 0x0020, []string{id.PatientID}},
			{0x0010, 0x0030, []string{id.PatientBirthDate}},
			{0x0010, 0x0040, []string{id.PatientSex}},
			{0x0018, 0x0020, []string{"RM"}},
			{0x0018, 0x0021, []string{"NONE"}},
			{0x0018, 0x0022, []string{""}},
			{0x0018, 0x0023, []string{acq}},
			{0x0018, 0x0050, []string{ds(thick)}},
			{0x0018, 0x0080, []string{""}},
			{0x0018, 0x0081, []string{""}},
			{0x0018, 0x0088, []string{ds(thick)}},
			{0x0018, 0x0091, []string{""}},
			{0x0018, 0x1020, []string{truncRunes("recon "+s.Software, 64)}},
			{0x0018, 0x5100, []string{""}},
			{0x0020, 0x000D, []string{id.StudyInstanceUID}},
			{0x0020, 0x000E, []string{series}},
			{0x0020, 0x0010, []string{id.StudyID}},
			{0x0020, 0x0011, []string{strconv.Itoa(id.SeriesNumber)}},
			{0x0020, 0x0013, []string{strconv.Itoa(k + 1)}},
			{0x0020, 0x0032, ipp},
			{0x0020, 0x0037, []string{"1", "0", "0", "0", "1", "0"}},
			{0x0020, 0x0052, []string{id.FrameOfReferenceUID}},
			// Laterality: empty, "unknown" (dciodvfy needs it present).
			{0x0020, 0x0060, []string{""}},
			{0x0020, 0x1040, []string{""}},
			{0x0020, 0x1041, []string{ds(z)}},
			{0x0020, 0x4000, []string{comments}},
			{0x0028, 0x0002, []int{1}},
			{0x0028, 0x0004, []string{"MONOCHROME2"}},
			{0x0028, 0x0010, []int{rows}},
			{0x0028, 0x0011, []int{cols}},
			{0x0028, 0x0030, []string{ds(rowSp), ds(colSp)}},
			{0x0028, 0x0100, []int{16}},
			{0x0028, 0x0101, []int{16}},
			{0x0028, 0x0102, []int{15}},
			{0x0028, 0x0103, []int{0}},
			{0x0028, 0x1050, []string{strconv.Itoa(window / 2)}},
			{0x0028, 0x1051, []string{strconv.Itoa(window)}},
			{0x7FE0, 0x0010, dcm.PixelDataInfo{IntentionallyUnprocessed: true, UnprocessedValueData: pix}},
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

// elem is one attribute as Write lists it, in ascending tag order.
type elem struct {
	group, element uint16
	value          any
}

// writeFile writes one file: the elements into a dataset, through the
// library's writer, which adds the meta group's length.
func writeFile(name string, el []elem) (err error) {
	ds := dcm.Dataset{Elements: make([]*dcm.Element, 0, len(el))}
	for _, e := range el {
		t := tag.Tag{Group: e.group, Element: e.element}
		var x *dcm.Element
		if pd, ok := e.value.(dcm.PixelDataInfo); ok {
			x = &dcm.Element{Tag: t, RawValueRepresentation: "OW", ValueLength: uint32(len(pd.UnprocessedValueData)), Value: mustValue(pd)}
		} else {
			x, err = dcm.NewElement(t, e.value)
			if err != nil {
				return fmt.Errorf("attribute %v: %w", t, err)
			}
		}
		ds.Elements = append(ds.Elements, x)
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
	if err := dcm.Write(bw, ds); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return bw.Flush()
}

func mustValue(v any) dcm.Value {
	x, err := dcm.NewValue(v)
	if err != nil {
		panic(err) // a PixelDataInfo is always a value
	}
	return x
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
