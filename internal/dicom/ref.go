package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Limits of ReadRef, which may be handed any file: each is checked before
// anything is allocated or read past it.
const (
	// MaxRefValueBytes caps one value ReadRef keeps (the identity
	// attributes are at most 64 characters; 4 bytes each in UTF-8, and
	// room for padding).
	MaxRefValueBytes = 1 << 10
	// MaxRefElements caps the elements ReadRef walks (nested ones
	// included) before it has found what it needs.
	MaxRefElements = 100_000
	// MaxRefDepth caps the nesting of sequences.
	MaxRefDepth = 16
	// maxMetaBytes caps the file meta group.
	maxMetaBytes = 64 << 10
)

// refTags maps the attributes ReadRef reads to the identity options they
// become.
var refTags = map[uint32]string{
	0x00080020: OptStudyDate,
	0x00080030: OptStudyTime,
	0x00080050: OptAccessionNumber,
	0x00080090: OptReferringPhysician,
	0x00100010: OptPatientName,
	0x00100020: OptPatientID,
	0x00100030: OptPatientBirthDate,
	0x00100040: OptPatientSex,
	0x0020000D: OptStudyInstanceUID,
	0x00200010: OptStudyID,
	0x00200052: OptFrameOfReferenceUID,
}

const (
	tagCharset       = 0x00080005
	tagLastNeeded    = 0x00200052 // the highest tag in refTags
	tagItem          = 0xFFFEE000
	tagItemEnd       = 0xFFFEE00D
	tagSequenceEnd   = 0xFFFEE0DD
	undefinedLength  = 0xFFFFFFFF
	tsImplicitLE     = "1.2.840.10008.1.2"
	tsExplicitBE     = "1.2.840.10008.1.2.2"
	tsDeflatedPrefix = "1.2.840.10008.1.2.1.99"
)

// ReadRef reads the identity of a DICOM image (Part 10: "DICM" at byte
// 128) of the exam a reconstruction belongs to, and returns it as the
// identity options (IdentityOptions; empty attributes are left out), each
// value checked as FromOptions checks it. The image must name its study
// (StudyInstanceUID).
//
// Only the attributes before the pixel data are read, and of them only the
// values it keeps: every other value is skipped without being read. It
// reads the transfer syntaxes in use (explicit and implicit VR little
// endian, explicit big endian, the compressed ones, whose pixel data it
// never reaches), and values in the character sets ISO_IR 192 (UTF-8),
// ISO_IR 100 (Latin-1) and ASCII.
func ReadRef(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	opts, err := ParseRef(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("DICOM reference %s: %w", path, err)
	}
	return opts, nil
}

// ParseRef is ReadRef of the size bytes that r holds.
func ParseRef(r io.Reader, size int64) (map[string]string, error) {
	p := &refParser{r: bufio.NewReaderSize(r, 64<<10), left: size, found: map[uint32][]byte{}}
	return p.read()
}

// errNotDICOM: the file has no "DICM" at byte 128.
var errNotDICOM = errors.New("not a DICOM file (no DICM at byte 128)")

// IsDICOM reports whether the file at path starts as a DICOM Part 10 file
// does: 128 bytes, then "DICM".
func IsDICOM(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [132]byte
	_, err = io.ReadFull(f, b[:])
	return err == nil && string(b[128:]) == "DICM"
}

type refParser struct {
	r        *bufio.Reader
	left     int64 // bytes of the file not yet consumed
	bo       binary.ByteOrder
	implicit bool
	elements int
	found    map[uint32][]byte
}

func (p *refParser) read() (map[string]string, error) {
	var pre [132]byte
	if err := p.full(pre[:]); err != nil || string(pre[128:]) != "DICM" {
		return nil, errNotDICOM
	}
	ts, err := p.meta()
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(ts, tsDeflatedPrefix):
		return nil, errors.New("the deflated transfer syntax is not read")
	case ts == tsImplicitLE:
		p.bo, p.implicit = binary.LittleEndian, true
	case ts == tsExplicitBE:
		p.bo = binary.BigEndian
	default:
		p.bo = binary.LittleEndian
	}
	if err := p.dataset(); err != nil {
		return nil, err
	}
	return p.options()
}

// meta reads the file meta group (explicit VR little endian) and returns
// the transfer syntax.
func (p *refParser) meta() (string, error) {
	p.bo = binary.LittleEndian
	var ts string
	start := p.left
	for {
		if start-p.left > maxMetaBytes {
			return "", fmt.Errorf("file meta group longer than %d bytes", maxMetaBytes)
		}
		b, err := p.r.Peek(2)
		if err != nil || binary.LittleEndian.Uint16(b) != 0x0002 {
			break // the data set starts
		}
		tag, vr, n, err := p.header(false)
		if err != nil {
			return "", fmt.Errorf("file meta: %w", err)
		}
		if n == undefinedLength || n > maxMetaBytes {
			return "", fmt.Errorf("file meta element %08X of length %d", tag, n)
		}
		_ = vr
		if tag == 0x00020010 {
			v, err := p.value(n)
			if err != nil {
				return "", err
			}
			ts = strings.TrimRight(string(v), "\x00 ")
			continue
		}
		if err := p.skip(int64(n)); err != nil {
			return "", err
		}
	}
	if ts == "" {
		return "", errors.New("no transfer syntax in the file meta")
	}
	return ts, nil
}

// dataset walks the top level of the data set up to the last attribute
// needed, keeping the values of refTags and the character set.
func (p *refParser) dataset() error {
	for p.left > 0 {
		tag, vr, n, err := p.header(p.implicit)
		if err != nil {
			return err
		}
		if tag > tagLastNeeded {
			return nil // past everything needed (the pixel data too)
		}
		if _, keep := refTags[tag]; keep || tag == tagCharset {
			if n == undefinedLength || n > MaxRefValueBytes {
				return fmt.Errorf("attribute (%04X,%04X) is %d bytes long, at most %d", tag>>16, tag&0xffff, n, MaxRefValueBytes)
			}
			v, err := p.value(n)
			if err != nil {
				return err
			}
			p.found[tag] = v
			continue
		}
		if err := p.skipValue(vr, n, 0); err != nil {
			return err
		}
	}
	return nil
}

// header reads one element's tag, VR ("" when implicit) and length.
func (p *refParser) header(implicit bool) (tag uint32, vr string, n uint32, err error) {
	if p.elements++; p.elements > MaxRefElements {
		return 0, "", 0, fmt.Errorf("more than %d elements before the identity was found", MaxRefElements)
	}
	var b [8]byte
	if err := p.full(b[:4]); err != nil {
		return 0, "", 0, err
	}
	tag = uint32(p.bo.Uint16(b[0:2]))<<16 | uint32(p.bo.Uint16(b[2:4]))
	// Item and delimitation tags have no VR in any transfer syntax.
	if implicit || tag>>16 == 0xFFFE {
		if err := p.full(b[:4]); err != nil {
			return 0, "", 0, err
		}
		return tag, "", p.bo.Uint32(b[:4]), nil
	}
	if err := p.full(b[:4]); err != nil {
		return 0, "", 0, err
	}
	vr = string(b[0:2])
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		if err := p.full(b[4:8]); err != nil {
			return 0, "", 0, err
		}
		return tag, vr, p.bo.Uint32(b[4:8]), nil
	}
	if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
		return 0, "", 0, fmt.Errorf("element (%04X,%04X): %q is not a VR", tag>>16, tag&0xffff, vr)
	}
	return tag, vr, uint32(p.bo.Uint16(b[2:4])), nil
}

// skipValue skips an element's value: a defined length directly, an
// undefined one (a sequence, or encapsulated or UN data) item by item.
func (p *refParser) skipValue(vr string, n uint32, depth int) error {
	if n != undefinedLength {
		return p.skip(int64(n))
	}
	if depth >= MaxRefDepth {
		return fmt.Errorf("sequences nested more than %d deep", MaxRefDepth)
	}
	// The items of an undefined-length UN are implicit VR little endian.
	implicit := p.implicit || vr == "UN"
	for {
		tag, _, n, err := p.header(true)
		if err != nil {
			return err
		}
		switch tag {
		case tagSequenceEnd:
			return nil
		case tagItem:
			if n != undefinedLength {
				if err := p.skip(int64(n)); err != nil {
					return err
				}
				continue
			}
			if err := p.skipItem(implicit, depth+1); err != nil {
				return err
			}
		default:
			return fmt.Errorf("element (%04X,%04X) where a sequence item belongs", tag>>16, tag&0xffff)
		}
	}
}

// skipItem skips the elements of an undefined-length item up to its end.
func (p *refParser) skipItem(implicit bool, depth int) error {
	for {
		tag, vr, n, err := p.header(implicit)
		if err != nil {
			return err
		}
		if tag == tagItemEnd {
			return nil
		}
		if err := p.skipValue(vr, n, depth); err != nil {
			return err
		}
	}
}

func (p *refParser) full(b []byte) error {
	if int64(len(b)) > p.left {
		return io.ErrUnexpectedEOF
	}
	if _, err := io.ReadFull(p.r, b); err != nil {
		return err
	}
	p.left -= int64(len(b))
	return nil
}

// value reads n bytes, n already checked against a cap.
func (p *refParser) value(n uint32) ([]byte, error) {
	if int64(n) > p.left {
		return nil, fmt.Errorf("a value of %d bytes where the file has %d left", n, p.left)
	}
	b := make([]byte, n)
	return b, p.full(b)
}

func (p *refParser) skip(n int64) error {
	if n > p.left {
		return fmt.Errorf("a value of %d bytes where the file has %d left", n, p.left)
	}
	if _, err := p.r.Discard(int(min(n, 1<<62))); err != nil {
		return err
	}
	p.left -= n
	return nil
}

// options decodes the values found and checks them as options.
func (p *refParser) options() (map[string]string, error) {
	charset := strings.TrimSpace(strings.TrimRight(string(p.found[tagCharset]), "\x00"))
	out := map[string]string{}
	for tag, raw := range p.found {
		key, ok := refTags[tag]
		if !ok {
			continue
		}
		v, err := decodeText(raw, charset)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", key, err)
		}
		v = strings.Trim(v, " \x00")
		if v != "" {
			out[key] = v
		}
	}
	if out[OptStudyInstanceUID] == "" {
		return nil, errors.New("no StudyInstanceUID: not an image of an exam")
	}
	// The same rules as for options sent by hand; the error names the
	// attribute, not its value (patient data).
	if _, _, err := FromOptions(out, "ref"); err != nil {
		return nil, fmt.Errorf("the file's %w", err)
	}
	return out, nil
}

// decodeText turns a value in the file's character set into UTF-8.
func decodeText(b []byte, charset string) (string, error) {
	ascii := true
	for _, c := range b {
		if c >= 0x80 || c == 0x1b { // ESC: an ISO 2022 code extension
			ascii = false
			break
		}
	}
	if ascii {
		return string(b), nil
	}
	switch charset {
	case "ISO_IR 192":
		if !utf8.Valid(b) {
			return "", errors.New("is not valid UTF-8 (SpecificCharacterSet ISO_IR 192)")
		}
		return string(b), nil
	case "ISO_IR 100":
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c) // Latin-1 is the first 256 code points
		}
		return string(r), nil
	}
	return "", fmt.Errorf("has characters of SpecificCharacterSet %q, which is not read (ISO_IR 192, ISO_IR 100 and ASCII are)", charset)
}
