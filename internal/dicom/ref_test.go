package dicom_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/dicom"
)

// dcmFile builds DICOM files by hand, for ReadRef's tests.
type dcmFile struct {
	bo       binary.ByteOrder
	implicit bool
	buf      bytes.Buffer
}

func newFile(ts string) *dcmFile {
	f := &dcmFile{bo: binary.LittleEndian}
	f.buf.Write(make([]byte, 128))
	f.buf.WriteString("DICM")
	f.elem(0x00020010, "UI", pad(ts, 0)) // meta: explicit VR little endian
	switch ts {
	case "1.2.840.10008.1.2":
		f.implicit = true
	case "1.2.840.10008.1.2.2":
		f.bo = binary.BigEndian
	}
	return f
}

func pad(s string, c byte) []byte {
	if len(s)%2 == 1 {
		s += string(c)
	}
	return []byte(s)
}

func (f *dcmFile) tag(tag uint32) {
	var b [4]byte
	f.bo.PutUint16(b[0:2], uint16(tag>>16))
	f.bo.PutUint16(b[2:4], uint16(tag))
	f.buf.Write(b[:])
}

func (f *dcmFile) u32(n uint32) {
	var b [4]byte
	f.bo.PutUint32(b[:], n)
	f.buf.Write(b[:])
}

// header writes a tag, VR (when explicit) and length n.
func (f *dcmFile) header(tag uint32, vr string, n uint32) {
	f.tag(tag)
	switch {
	case f.implicit || tag>>16 == 0xFFFE:
		f.u32(n)
	case strings.Contains("OB OD OF OL OV OW SQ SV UC UN UR UT UV", vr):
		f.buf.WriteString(vr)
		f.buf.Write([]byte{0, 0})
		f.u32(n)
	default:
		f.buf.WriteString(vr)
		var b [2]byte
		f.bo.PutUint16(b[:], uint16(n))
		f.buf.Write(b[:])
	}
}

func (f *dcmFile) elem(tag uint32, vr string, v []byte) *dcmFile {
	f.header(tag, vr, uint32(len(v)))
	f.buf.Write(v)
	return f
}

func (f *dcmFile) str(tag uint32, vr, v string) *dcmFile {
	c := byte(' ')
	if vr == "UI" {
		c = 0
	}
	return f.elem(tag, vr, pad(v, c))
}

// identity writes a study, patient and frame of reference, in tag order
// from (0008,0020) on.
func (f *dcmFile) identity() *dcmFile {
	return f.str(0x00080020, "DA", "20261201").str(0x00080030, "TM", "101500").
		str(0x00100010, "PN", "Doe^Jane").str(0x00100020, "LO", "MRN-1").str(0x00100040, "CS", "F").
		str(0x0020000D, "UI", "1.2.3.4").str(0x00200052, "UI", "1.2.3.5")
}

func (f *dcmFile) write(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ref.dcm")
	if err := os.WriteFile(p, f.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var wantIdentity = map[string]string{
	"study_date": "20261201", "study_time": "101500", "patient_name": "Doe^Jane", "patient_id": "MRN-1",
	"patient_sex": "F", "study_instance_uid": "1.2.3.4", "frame_of_reference_uid": "1.2.3.5",
}

func checkIdentity(t *testing.T, name string, got map[string]string, err error, want map[string]string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %v, want %v", name, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", name, k, got[k], v)
		}
	}
}

// TestReadRefTransferSyntaxes: the identity is read from files in
// implicit and explicit VR little endian and explicit big endian, past
// sequences of undefined length (nested, and of VR UN, whose items are
// implicit VR), private elements and pixel data it does not need.
func TestReadRefTransferSyntaxes(t *testing.T) {
	for _, ts := range []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"} {
		f := newFile(ts)
		f.str(0x00080005, "CS", "ISO_IR 192")
		// (0008,1140) a sequence of undefined length: an undefined-length
		// item holding another sequence, then a defined-length item.
		f.header(0x00081140, "SQ", 0xFFFFFFFF)
		f.header(0xFFFEE000, "", 0xFFFFFFFF)
		f.str(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.4")
		f.header(0x00081199, "SQ", 0xFFFFFFFF)
		f.header(0xFFFEE000, "", 0xFFFFFFFF)
		f.str(0x00081155, "UI", "9.9.9")
		f.header(0xFFFEE00D, "", 0)
		f.header(0xFFFEE0DD, "", 0)
		f.header(0xFFFEE00D, "", 0)
		f.header(0xFFFEE000, "", 4)
		f.buf.Write([]byte{1, 2, 3, 4})
		f.header(0xFFFEE0DD, "", 0)
		f.str(0x00081030, "LO", "head") // not kept
		f.str(0x00080020, "DA", "20261201").str(0x00080030, "TM", "101500")
		if !f.implicit {
			// (0009,1001) private UN of undefined length: implicit items.
			f.header(0x00091001, "UN", 0xFFFFFFFF)
			f.tag(0xFFFEE000)
			f.u32(0xFFFFFFFF)
			f.tag(0x00091002)
			f.u32(2)
			f.buf.WriteString("ab")
			f.tag(0xFFFEE00D)
			f.u32(0)
			f.tag(0xFFFEE0DD)
			f.u32(0)
		}
		f.str(0x00100010, "PN", "Doe^Jane").str(0x00100020, "LO", "MRN-1").str(0x00100040, "CS", "F").
			str(0x0020000D, "UI", "1.2.3.4").str(0x00200052, "UI", "1.2.3.5")
		f.elem(0x7FE00010, "OW", make([]byte, 64))
		got, err := dicom.ReadRef(f.write(t))
		checkIdentity(t, ts, got, err, wantIdentity)
	}
}

// TestReadRefCharsets: Latin-1 (ISO_IR 100) becomes UTF-8; a character
// set it does not read is refused when a value needs it.
func TestReadRefCharsets(t *testing.T) {
	f := newFile("1.2.840.10008.1.2.1").str(0x00080005, "CS", "ISO_IR 100").
		elem(0x00100010, "PN", []byte("M\xfcller^J\xfcrgen ")).str(0x0020000D, "UI", "1.2.3")
	got, err := dicom.ReadRef(f.write(t))
	checkIdentity(t, "latin-1", got, err, map[string]string{"patient_name": "Müller^Jürgen", "study_instance_uid": "1.2.3"})

	f = newFile("1.2.840.10008.1.2.1").str(0x00080005, "CS", `\ISO 2022 IR 87`).
		str(0x00100010, "PN", "Yamada^Tarou").str(0x0020000D, "UI", "1.2.3")
	if _, err := dicom.ReadRef(f.write(t)); err != nil {
		t.Errorf("an ASCII value in a file of ISO 2022 was refused: %v", err)
	}
	f = newFile("1.2.840.10008.1.2.1").str(0x00080005, "CS", `\ISO 2022 IR 87`).
		elem(0x00100010, "PN", []byte("Yamada^Tarou=\x1b$B;3ED\x1b(B^")).str(0x0020000D, "UI", "1.2.3")
	if _, err := dicom.ReadRef(f.write(t)); err == nil || !strings.Contains(err.Error(), "ISO 2022 IR 87") {
		t.Errorf("an ISO 2022 value: error %v, want a refusal naming the character set", err)
	}
	f = newFile("1.2.840.10008.1.2.1").str(0x00080005, "CS", "GB18030").
		elem(0x00100010, "PN", []byte("\xc0\xee^\xc4\xbe")).str(0x0020000D, "UI", "1.2.3")
	if _, err := dicom.ReadRef(f.write(t)); err == nil || !strings.Contains(err.Error(), "patient_name") || !strings.Contains(err.Error(), "GB18030") {
		t.Errorf("GB18030 value: error %v", err)
	}
}

// TestReadRefRefuses: files that are not DICOM, lack a study, hold a bad
// value, or are built to make the reader allocate, loop or recurse
// without bound are refused with an error, quickly and in little memory.
func TestReadRefRefuses(t *testing.T) {
	huge := newFile("1.2.840.10008.1.2.1")
	huge.header(0x00081030, "UT", 0xFFFFFFF0) // a 4 GiB value in a tiny file
	huge.buf.WriteString("xx")

	hugeKept := newFile("1.2.840.10008.1.2.1")
	hugeKept.header(0x00100010, "UC", 1<<20) // (a kept attribute, with a long VR)
	hugeKept.buf.Write(make([]byte, 1<<20))

	deep := newFile("1.2.840.10008.1.2.1")
	for range dicom.MaxRefDepth + 1 {
		deep.header(0x00081140, "SQ", 0xFFFFFFFF)
		deep.header(0xFFFEE000, "", 0xFFFFFFFF)
	}

	many := newFile("1.2.840.10008.1.2.1")
	for range dicom.MaxRefElements + 1 {
		many.header(0x00080001, "OB", 0)
	}

	noStudy := newFile("1.2.840.10008.1.2.1").str(0x00100020, "LO", "MRN-1")
	badSex := newFile("1.2.840.10008.1.2.1").str(0x00100040, "CS", "XYZ").str(0x0020000D, "UI", "1.2.3")
	badUID := newFile("1.2.840.10008.1.2.1").str(0x0020000D, "UI", "1.02.3")
	truncated := newFile("1.2.840.10008.1.2.1").identity()
	truncated.buf.Truncate(truncated.buf.Len() - 3)
	deflated := newFile("1.2.840.10008.1.2.1.99").identity()
	badVR := newFile("1.2.840.10008.1.2.1")
	badVR.tag(0x00080008)
	badVR.buf.Write([]byte{0, 1, 2, 0})
	noMeta := &dcmFile{bo: binary.LittleEndian}
	noMeta.buf.Write(make([]byte, 128))
	noMeta.buf.WriteString("DICM")
	noMeta.str(0x00100020, "LO", "x")

	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not DICOM", []byte("hello"), "not a DICOM file"},
		{"no meta", noMeta.buf.Bytes(), "no transfer syntax"},
		{"huge skipped value", huge.buf.Bytes(), "where the file has"},
		{"huge kept value", hugeKept.buf.Bytes(), "at most 1024"},
		{"deep", deep.buf.Bytes(), "nested more than"},
		{"many elements", many.buf.Bytes(), "more than 100000 elements"},
		{"no study", noStudy.buf.Bytes(), "no StudyInstanceUID"},
		{"bad sex", badSex.buf.Bytes(), "option patient_sex: is not M, F or O"},
		{"bad uid", badUID.buf.Bytes(), "option study_instance_uid"},
		{"truncated", truncated.buf.Bytes(), "DICOM reference"},
		{"deflated", deflated.buf.Bytes(), "deflated"},
		{"bad VR", badVR.buf.Bytes(), "is not a VR"},
	} {
		p := filepath.Join(t.TempDir(), "x.dcm")
		if err := os.WriteFile(p, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := dicom.ReadRef(p)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "XYZ") {
			t.Errorf("%s: the error repeats the value: %v", c.name, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
			t.Errorf("%s: ReadRef allocated %d bytes", c.name, alloc)
		}
	}
}

// TestReadRefOfWrittenSeries: a file recon dicom wrote is a reference
// whose identity is the one it was written with.
func TestReadRefOfWrittenSeries(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "img")
	writeCFL(t, base, []int{8, 8}, func(i int) float32 { return float32(i) })
	img, err := dicom.ReadCFL(base)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"patient_id": "P9", "patient_name": "Ünal^Ayşe", "study_instance_uid": "1.2.3.9",
		"frame_of_reference_uid": "1.2.3.10", "accession_number": "A77", "study_date": "20260102", "study_time": "0910"}
	id, geo, err := dicom.FromOptions(opts, "j")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := dicom.Write(base, img, dicom.Series{Identity: id, Geometry: geo})
	if err != nil {
		t.Fatal(err)
	}
	got, err := dicom.ReadRef(paths[0])
	checkIdentity(t, "written", got, err, opts)
	if !dicom.IsDICOM(paths[0]) || dicom.IsDICOM(base+".cfl") {
		t.Error("IsDICOM does not tell the DICOM file from the .cfl")
	}
}

// FuzzParseRef: no input makes the reference reader panic, hang or
// allocate without bound, and what it returns passes the option rules.
func FuzzParseRef(f *testing.F) {
	f.Add(newFile("1.2.840.10008.1.2").identity().buf.Bytes())
	f.Add(newFile("1.2.840.10008.1.2.1").identity().buf.Bytes())
	f.Add(newFile("1.2.840.10008.1.2.2").identity().buf.Bytes())
	seq := newFile("1.2.840.10008.1.2.1")
	seq.header(0x00081140, "SQ", 0xFFFFFFFF)
	seq.header(0xFFFEE000, "", 0xFFFFFFFF)
	seq.str(0x00081150, "UI", "1.2.3")
	seq.header(0xFFFEE00D, "", 0)
	seq.header(0xFFFEE0DD, "", 0)
	f.Add(seq.identity().buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		opts, err := dicom.ParseRef(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if _, _, err := dicom.FromOptions(opts, "j"); err != nil || opts["study_instance_uid"] == "" {
			t.Fatalf("ParseRef returned %v, which the option rules refuse: %v", opts, err)
		}
	})
}
