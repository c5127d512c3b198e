//go:build unix

package dicom_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/recon-mri/recon/internal/dicom"
	"github.com/recon-mri/recon/internal/servertest"
)

// dciodvfy runs the DICOM validator of Debian's dicom3tools on path and
// fails the test on any error it reports.
func dciodvfy(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("dciodvfy", path).CombinedOutput()
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Error") {
			errs = append(errs, l)
		}
	}
	if err != nil || len(errs) > 0 || !strings.Contains(string(out), "MRImage") {
		t.Errorf("dciodvfy %s: %v, %d error(s):\n%s", filepath.Base(path), err, len(errs), out)
	}
}

func needDciodvfy(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dciodvfy"); err != nil {
		servertest.SkipUnlessStrict(t, "dciodvfy is not installed (Debian package dicom3tools; make deps)")
	}
}

// attrs reads the file back with the library and returns each attribute's
// values as strings.
func attrs(t *testing.T, path string) (map[tag.Tag][]string, []byte) {
	t.Helper()
	ds, err := dcm.ParseFile(path, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	m := map[tag.Tag][]string{}
	var pix []byte
	for _, e := range ds.Elements {
		// recon's writer names each attribute's VR itself: it must be
		// the dictionary's.
		if info, err := tag.Find(e.Tag); err != nil || !slices.Contains(info.VRs, e.RawValueRepresentation) {
			t.Errorf("%s: attribute %v has VR %s, the dictionary's are %v (%v)", filepath.Base(path), e.Tag, e.RawValueRepresentation, info.VRs, err)
		}
		switch v := e.Value.GetValue().(type) {
		case []string:
			m[e.Tag] = v
		case []int:
			for _, x := range v {
				m[e.Tag] = append(m[e.Tag], strconv.Itoa(x))
			}
		case dcm.PixelDataInfo:
			if len(v.Frames) != 1 {
				t.Fatalf("%s: %d frames", path, len(v.Frames))
			}
			nf, err := v.Frames[0].GetNativeFrame()
			if err != nil {
				t.Fatal(err)
			}
			raw := nf.RawDataSlice().([]uint16)
			pix = make([]byte, 2*len(raw))
			for i, x := range raw {
				binary.LittleEndian.PutUint16(pix[2*i:], x)
			}
		}
	}
	return m, pix
}

func one(t *testing.T, m map[tag.Tag][]string, tg tag.Tag) string {
	t.Helper()
	v := m[tg]
	if len(v) != 1 {
		t.Errorf("attribute %v has values %q, want one", tg, v)
		return ""
	}
	return v[0]
}

// TestWriteStack writes a 3D stack with every identity option and checks
// it with dciodvfy (no error), then reads it back: one series, shared
// study and frame of reference, instance numbers from 1, the geometry
// from the options, the identity as given, and the pixels in BART's
// orientation (dimension 0 the rows).
func TestWriteStack(t *testing.T) {
	needDciodvfy(t)
	dir := t.TempDir()
	const rows, cols, slices = 24, 16, 5
	base := filepath.Join(dir, "vol")
	writeCFL(t, base, []int{rows, cols, slices, 1}, func(i int) float32 { return float32(i % 1000) })
	img, err := dicom.ReadCFL(base)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{
		"patient_id": "PID-7", "patient_name": "Müller^Jürgen", "patient_birth_date": "19700131",
		"patient_sex": "M", "study_instance_uid": "1.2.3.4.5", "accession_number": "ACC123",
		"study_id": "S42", "study_date": "20261201", "study_time": "101500",
		"referring_physician": "Who^Doctor", "frame_of_reference_uid": "1.2.3.4.6",
		"series_number": "7", "series_description": "recon test", "fov_mm": "240,160", "slice_thickness_mm": "2.5",
	}
	id, geo, err := dicom.FromOptions(opts, "job1")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := dicom.Write(filepath.Join(dir, "vol"), img, dicom.Series{Identity: id, Geometry: geo, JobID: "job1", Method: "fft"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != slices {
		t.Fatalf("%d files, want %d", len(paths), slices)
	}
	series, sops := "", map[string]bool{}
	for k, p := range paths {
		if want := filepath.Join(dir, fmt.Sprintf("vol-%04d.dcm", k)); p != want {
			t.Errorf("file %d is %s, want %s", k, p, want)
		}
		dciodvfy(t, p)
		m, pix := attrs(t, p)
		for tg, want := range map[tag.Tag]string{
			tag.MediaStorageSOPClassUID: dicom.MRImageStorage, tag.SOPClassUID: dicom.MRImageStorage,
			tag.TransferSyntaxUID: dicom.ExplicitVRLittleEndian, tag.Modality: "MR",
			tag.PatientID: "PID-7", tag.PatientName: "Müller^Jürgen", tag.PatientBirthDate: "19700131",
			tag.PatientSex: "M", tag.StudyInstanceUID: "1.2.3.4.5", tag.AccessionNumber: "ACC123",
			tag.StudyID: "S42", tag.StudyDate: "20261201", tag.StudyTime: "101500",
			tag.ReferringPhysicianName: "Who^Doctor", tag.FrameOfReferenceUID: "1.2.3.4.6",
			tag.SeriesNumber: "7", tag.SeriesDescription: "recon test", tag.InstanceNumber: strconv.Itoa(k + 1),
			tag.SliceThickness: "2.5", tag.SpacingBetweenSlices: "2.5", tag.MRAcquisitionType: "3D",
			tag.SpecificCharacterSet: "ISO_IR 192", tag.Rows: strconv.Itoa(rows), tag.Columns: strconv.Itoa(cols),
			tag.SliceLocation: dsOf(float64(k-2) * 2.5),
		} {
			if got := one(t, m, tg); got != want {
				t.Errorf("slice %d: %v = %q, want %q", k, tg, got, want)
			}
		}
		if got := strings.Join(m[tag.ImageType], `\`); got != `DERIVED\PRIMARY\OTHER` {
			t.Errorf("ImageType %q", got)
		}
		if got := strings.Join(m[tag.PixelSpacing], `\`); got != `10\10` {
			t.Errorf("PixelSpacing %q, want 240/24 \\ 160/16", got)
		}
		if got, want := strings.Join(m[tag.ImagePositionPatient], `\`), `-75\-115\`+dsOf(float64(k-2)*2.5); got != want {
			t.Errorf("slice %d: ImagePositionPatient %q, want %q", k, got, want)
		}
		sop := one(t, m, tag.SOPInstanceUID)
		if sop != one(t, m, tag.MediaStorageSOPInstanceUID) || !dicom.ValidUID(sop) || sops[sop] || !strings.HasPrefix(sop, "2.25.") {
			t.Errorf("slice %d: SOP Instance UID %q (meta %q) not new, valid and the same in both", k, sop, m[tag.MediaStorageSOPInstanceUID])
		}
		sops[sop] = true
		se := one(t, m, tag.SeriesInstanceUID)
		if k == 0 {
			series = se
		} else if se != series {
			t.Errorf("slice %d in series %s, slice 0 in %s", k, se, series)
		}
		// Pixel (r, c) of slice k is value r + c·rows + k·rows·cols, scaled
		// so that the stack's brightest (999·√1.25) is 65535.
		for _, rc := range [][2]int{{0, 0}, {3, 0}, {0, 5}, {rows - 1, cols - 1}} {
			i := rc[0] + rc[1]*rows + k*rows*cols
			want := uint16(math.Round(float64(i%1000) / 999 * 65535))
			if got := binary.LittleEndian.Uint16(pix[2*(rc[0]*cols+rc[1]):]); got != want {
				t.Errorf("slice %d pixel (%d,%d) = %d, want %d", k, rc[0], rc[1], got, want)
			}
		}
	}
}

func dsOf(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if s == "-0" {
		return "0"
	}
	return s
}

// TestWritePlaceholders writes a 2D image for a job without identity
// options: dciodvfy reports no error, the patient is the marked
// placeholder, and study, series and frame of reference are new UIDs under
// the given root.
func TestWritePlaceholders(t *testing.T) {
	needDciodvfy(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "flat")
	writeCFL(t, base, []int{32, 32}, func(i int) float32 { return float32(i) })
	img, err := dicom.ReadCFL(base)
	if err != nil {
		t.Fatal(err)
	}
	id, geo, err := dicom.FromOptions(nil, "Jx1")
	if err != nil {
		t.Fatal(err)
	}
	const root = "1.2.826.0.1.3680043.10.99"
	paths, err := dicom.Write(base, img, dicom.Series{Identity: id, Geometry: geo, UIDRoot: root, JobID: "Jx1", Method: "pics"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || paths[0] != base+".dcm" {
		t.Fatalf("paths %q, want [%s.dcm]", paths, base)
	}
	dciodvfy(t, paths[0])
	m, _ := attrs(t, paths[0])
	for tg, want := range map[tag.Tag]string{
		tag.PatientName: "RECON^PHANTOM", tag.PatientID: "RECON-Jx1", tag.InstanceNumber: "1",
		tag.SeriesDescription: "recon pics", tag.MRAcquisitionType: "2D", tag.StudyID: "RECON",
		tag.SeriesNumber: "900", tag.SliceThickness: "1",
	} {
		if got := one(t, m, tg); got != want {
			t.Errorf("%v = %q, want %q", tg, got, want)
		}
	}
	if c := one(t, m, tag.ImageComments); !strings.Contains(c, "NOT A REAL PATIENT") {
		t.Errorf("ImageComments %q does not mark the placeholder", c)
	}
	for _, tg := range []tag.Tag{tag.StudyInstanceUID, tag.SeriesInstanceUID, tag.FrameOfReferenceUID, tag.SOPInstanceUID} {
		if u := one(t, m, tg); !strings.HasPrefix(u, root+".") || !dicom.ValidUID(u) || len(u) < len(root)+1+20 {
			t.Errorf("%v = %q, want a UID under %s with at least 20 digits of its own", tg, u, root)
		}
	}
	if d := one(t, m, tag.StudyDate); d != time.Now().Format("20060102") && d != time.Now().Add(-time.Minute).Format("20060102") {
		t.Errorf("StudyDate %q, want today", d)
	}
}

// TestFromOptionsRefuses: every identity and geometry option is checked
// against its attribute's rules, and the error names the option.
func TestFromOptionsRefuses(t *testing.T) {
	for _, c := range []struct{ key, value, want string }{
		{"patient_id", strings.Repeat("x", 65), "has 65 characters, at most 64"},
		{"patient_id", `a\b`, "backslash"},
		{"patient_id", "a\nb", "control character"},
		{"patient_id", "\xff", "not valid UTF-8"},
		{"patient_name", "a^b^c^d^e^f", "6 components"},
		{"patient_name", "a=b=c=d", "4 component groups"},
		{"patient_birth_date", "19701332", "not a date"},
		{"patient_birth_date", "1970-01-01", "not a date"},
		{"patient_sex", "male", "not M, F or O"},
		{"study_instance_uid", "1.02.3", "not a UID"},
		{"study_instance_uid", "1.2." + strings.Repeat("1", 70), "not a UID"},
		{"frame_of_reference_uid", "abc", "not a UID"},
		{"accession_number", strings.Repeat("1", 17), "has 17 characters, at most 16"},
		{"study_id", strings.Repeat("1", 17), "has 17 characters, at most 16"},
		{"study_date", "20260230", "not a date"},
		{"study_time", "246000", "not a time"},
		{"study_time", "1015001", "not a time"},
		{"referring_physician", `Dr\No`, "backslash"},
		{"series_number", "-1", "not a whole number"},
		{"series_number", "x", "not a whole number"},
		{"series_description", strings.Repeat("d", 65), "at most 64"},
		{"fov_mm", "0", "above 0"},
		{"fov_mm", "NaN", "above 0"},
		{"fov_mm", "1,2,3", "one size in mm, or two"},
		{"slice_thickness_mm", "1e9", "at most 10000"},
	} {
		_, _, err := dicom.FromOptions(map[string]string{c.key: c.value}, "j")
		if err == nil || !strings.Contains(err.Error(), "option "+c.key) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%q: error %v, want one naming the option and saying %q", c.key, c.value, err, c.want)
		}
		// Identity values are patient data: the error (which reaches the
		// job's record) does not repeat them.
		if strings.HasPrefix(c.key, "patient_") || strings.HasPrefix(c.key, "study_") || c.key == "referring_physician" ||
			c.key == "accession_number" || c.key == "frame_of_reference_uid" {
			if err != nil && len(c.value) > 1 && strings.Contains(err.Error(), c.value) {
				t.Errorf("%s: error %q repeats the value", c.key, err)
			}
		}
	}
	for _, ok := range []map[string]string{
		{"patient_name": "Yamada^Tarou=山田^太郎=やまだ^たろう"},
		{"study_time": "1015"}, {"study_time": "101500.123456"}, {"patient_birth_date": ""},
		{"patient_sex": "O"}, {"fov_mm": "220"}, {"study_instance_uid": "2.25.0"},
	} {
		if _, _, err := dicom.FromOptions(ok, "j"); err != nil {
			t.Errorf("%v refused: %v", ok, err)
		}
	}
}

// TestReadCFLRefuses: a header that does not match its data, an image with
// more than three dimensions in use, or one too large is refused before
// its data is read.
func TestReadCFLRefuses(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "x")
	writeCFL(t, base, []int{4, 4}, func(int) float32 { return 1 })
	for _, c := range []struct{ hdr, want string }{
		{"# Dimensions\n4 4 2\n", "need 256"},
		{"# Dimensions\n4 4 1 2\n", "dimension 3 has 2 entries"},
		{"# Dimensions\n65536 65536 1\n", "at most 65535 a side"},
		{"# Dimensions\n16384 16384 2\n", "pixels, at most"},
		{"# Dimensions\n4 0\n", "not a whole number"},
		{"# nothing\n", "no dimensions"},
		{strings.Repeat("#", dicom.MaxHeaderBytes+1), "longer than"},
	} {
		if err := os.WriteFile(base+".hdr", []byte(c.hdr), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := dicom.ReadCFL(base); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("header %.40q: error %v, want %q", c.hdr, err, c.want)
		}
	}
}

// TestNewUID: UUID-derived UIDs under 2.25 and random ones under a site's
// root are valid, unique and at most 64 characters; a root without room
// is refused.
func TestNewUID(t *testing.T) {
	seen := map[string]bool{}
	for _, root := range []string{dicom.UUIDRoot, "1.2.3", "1.2.826.0.1.3680043.10.123456789012345678"} {
		for range 200 {
			u, err := dicom.NewUID(root)
			if err != nil {
				t.Fatal(err)
			}
			if !dicom.ValidUID(u) || !strings.HasPrefix(u, root+".") || seen[u] {
				t.Fatalf("NewUID(%s) = %q: not a valid new UID under the root", root, u)
			}
			seen[u] = true
		}
	}
	if _, err := dicom.NewUID("1.2.826.0.1.3680043.10.123456789012345678901"); err == nil {
		t.Error("a 44-character root was accepted")
	}
	for _, bad := range []string{"", "1..2", "01.2", "1.2a", ".1"} {
		if dicom.ValidUID(bad) {
			t.Errorf("ValidUID(%q) = true", bad)
		}
	}
}
