package dicom

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// libraryBytes encodes el with github.com/suyashkumar/dicom, whose
// dictionary gives each attribute's VR (recon's writer took it from there
// before it had its own).
func libraryBytes(t *testing.T, el []elem) []byte {
	t.Helper()
	ds := dcm.Dataset{}
	for _, e := range el {
		tg := tag.Tag{Group: e.group, Element: e.element}
		var x *dcm.Element
		var err error
		if e.vr == "OW" {
			pd := dcm.PixelDataInfo{IntentionallyUnprocessed: true, UnprocessedValueData: e.value.([]byte)}
			v, verr := dcm.NewValue(pd)
			if verr != nil {
				t.Fatal(verr)
			}
			x = &dcm.Element{Tag: tg, RawValueRepresentation: "OW", ValueLength: uint32(len(pd.UnprocessedValueData)), Value: v}
		} else if x, err = dcm.NewElement(tg, e.value); err != nil {
			t.Fatalf("(%04X,%04X): %v", e.group, e.element, err)
		}
		if x.RawValueRepresentation != e.vr {
			t.Errorf("(%04X,%04X): the library's dictionary says VR %s, the writer %s", e.group, e.element, x.RawValueRepresentation, e.vr)
		}
		ds.Elements = append(ds.Elements, x)
	}
	var b bytes.Buffer
	if err := dcm.Write(&b, ds); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWriterMatchesLibrary encodes attributes of every kind Write lists
// (odd and even lengths, UIDs, several values, empty values, UTF-8 text,
// unsigned shorts, pixel data) and compares the bytes with what
// github.com/suyashkumar/dicom writes for the same attributes.
func TestWriterMatchesLibrary(t *testing.T) {
	pix := make([]byte, 2*3*5)
	for i := range pix {
		pix[i] = byte(i * 7)
	}
	el := []elem{
		{0x0002, 0x0001, "OB", []byte{0, 1}},
		{0x0002, 0x0002, "UI", []string{MRImageStorage}},
		{0x0002, 0x0003, "UI", []string{"1.2.3.44"}},
		{0x0002, 0x0010, "UI", []string{ExplicitVRLittleEndian}},
		{0x0002, 0x0012, "UI", []string{ImplementationClassUID}},
		{0x0002, 0x0013, "SH", []string{ImplementationVersionName}},
		{0x0008, 0x0005, "CS", []string{"ISO_IR 192"}},
		{0x0008, 0x0008, "CS", []string{"DERIVED", "PRIMARY", "OTHER"}},
		{0x0008, 0x0012, "DA", []string{"20261208"}},
		{0x0008, 0x0013, "TM", []string{"013000"}},
		{0x0008, 0x0016, "UI", []string{MRImageStorage}},
		{0x0008, 0x0018, "UI", []string{"1.2.3.44"}},
		{0x0008, 0x0050, "SH", []string{""}},
		{0x0008, 0x0070, "LO", []string{""}},
		{0x0008, 0x0090, "PN", []string{"Doe^Jo"}},
		{0x0008, 0x103E, "LO", []string{"recon pics"}},
		{0x0008, 0x2111, "ST", []string{"recon pics reconstruction of raw data, job j1"}},
		{0x0010, 0x0010, "PN", []string{"Müller^Zoë"}},
		{0x0010, 0x0020, "LO", []string{"ID7"}},
		{0x0018, 0x0050, "DS", []string{"1.5"}},
		{0x0018, 0x0091, "IS", []string{""}},
		{0x0020, 0x0011, "IS", []string{"12"}},
		{0x0020, 0x0032, "DS", []string{"-2", "-1", "0.75"}},
		{0x0020, 0x4000, "LT", []string{"recon pics reconstruction; NOT A REAL PATIENT"}},
		{0x0028, 0x0002, "US", []int{1}},
		{0x0028, 0x0010, "US", []int{3}},
		{0x0028, 0x0011, "US", []int{65535}},
		{0x0028, 0x1050, "DS", []string{"32768"}},
		{0x7FE0, 0x0010, "OW", pix},
	}
	name := filepath.Join(t.TempDir(), "x.dcm")
	if err := writeFile(name, el); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	want := libraryBytes(t, el)
	if !bytes.Equal(got, want) {
		n := 0
		for n < min(len(got), len(want)) && got[n] == want[n] {
			n++
		}
		t.Fatalf("the writer's %d bytes differ from the library's %d from offset %d:\n got % x\nwant % x",
			len(got), len(want), n, got[n:min(len(got), n+32)], want[n:min(len(want), n+32)])
	}
}

// TestWriterRefuses checks that a value the format cannot hold is an error,
// not a file: a number out of an unsigned short's range, text too long for
// a 2-byte length, a value of a type the writer does not know.
func TestWriterRefuses(t *testing.T) {
	for _, tc := range []struct {
		e    elem
		want string
	}{
		{elem{0x0028, 0x0010, "US", []int{65536}}, "not an unsigned short"},
		{elem{0x0028, 0x0010, "US", []int{-1}}, "not an unsigned short"},
		{elem{0x0020, 0x4000, "LT", []string{strings.Repeat("x", 1<<16)}}, "too long for VR LT"},
		{elem{0x0020, 0x4000, "LT", 7}, "a value of type int"},
		{elem{0x0020, 0x4000, "L", []string{"x"}}, `VR "L"`},
	} {
		name := filepath.Join(t.TempDir(), "x.dcm")
		err := writeFile(name, []elem{{0x0002, 0x0001, "OB", []byte{0, 1}}, tc.e})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.e, err, tc.want)
		}
		if _, serr := os.Stat(name); !os.IsNotExist(serr) {
			t.Errorf("%+v: a file was left: %v", tc.e, serr)
		}
	}
}
