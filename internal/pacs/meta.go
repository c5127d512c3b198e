// Package pacs sends DICOM instances to a PACS and decides, instance by
// instance, whether the PACS stored each one: by DICOMweb STOW-RS (STOW)
// and by DIMSE C-STORE through dcmtk's storescu (CStore). It knows nothing
// of jobs or of the store; the server's delivery (internal/server,
// pacs.go) records what it reports.
package pacs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxMetaBytes bounds the file meta information group a file may declare
// (its (0002,0000) length): a real one is a few hundred bytes.
const MaxMetaBytes = 64 << 10

// preambleLen is the length of a Part 10 file's preamble, before "DICM".
const preambleLen = 128

// Meta is what a DICOM Part 10 file's meta header says about its instance.
type Meta struct {
	SOPClassUID    string // (0002,0002) MediaStorageSOPClassUID
	SOPInstanceUID string // (0002,0003) MediaStorageSOPInstanceUID
	TransferSyntax string // (0002,0010) TransferSyntaxUID
}

// ErrNotDICOM is returned by ReadMeta for a file without "DICM" at offset
// 128: not a DICOM Part 10 file, so not something to send to a PACS.
var ErrNotDICOM = errors.New("not a DICOM file (no DICM at offset 128)")

// IsDICOM reports whether the file at path is a DICOM Part 10 file by its
// content: "DICM" at offset 128, whatever its name.
func IsDICOM(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [preambleLen + 4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, err
	}
	return string(b[preambleLen:]) == "DICM", nil
}

// ReadMeta reads the file meta information of the Part 10 file at path
// (explicit VR little endian, as the standard requires of group 0002). It
// returns ErrNotDICOM for a file that is not one, and an error when the
// SOP Class or Instance UID is missing: no PACS stores such an instance.
func ReadMeta(path string) (Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, err
	}
	defer f.Close()
	return readMeta(f)
}

func readMeta(r io.Reader) (Meta, error) {
	var head [preambleLen + 4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Meta{}, ErrNotDICOM
		}
		return Meta{}, err
	}
	if string(head[preambleLen:]) != "DICM" {
		return Meta{}, ErrNotDICOM
	}
	// (0002,0000) UL 4 <length>: 12 bytes.
	var gl [12]byte
	if _, err := io.ReadFull(r, gl[:]); err != nil {
		return Meta{}, fmt.Errorf("file meta: %w", err)
	}
	if binary.LittleEndian.Uint16(gl[0:]) != 2 || binary.LittleEndian.Uint16(gl[2:]) != 0 || string(gl[4:6]) != "UL" {
		return Meta{}, errors.New("file meta: no (0002,0000) group length")
	}
	n := binary.LittleEndian.Uint32(gl[8:])
	if n > MaxMetaBytes {
		return Meta{}, fmt.Errorf("file meta: group length %d over %d bytes", n, MaxMetaBytes)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Meta{}, fmt.Errorf("file meta: %w", err)
	}
	var m Meta
	for len(buf) > 0 {
		if len(buf) < 8 {
			return Meta{}, errors.New("file meta: truncated element")
		}
		group, elem := binary.LittleEndian.Uint16(buf[0:]), binary.LittleEndian.Uint16(buf[2:])
		vr := string(buf[4:6])
		var vlen uint32
		off := 8
		switch vr {
		case "OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV":
			if len(buf) < 12 {
				return Meta{}, errors.New("file meta: truncated element")
			}
			vlen, off = binary.LittleEndian.Uint32(buf[8:]), 12
		default:
			vlen = uint32(binary.LittleEndian.Uint16(buf[6:]))
		}
		if group != 2 {
			return Meta{}, fmt.Errorf("file meta: element (%04x,%04x) in group 0002's length", group, elem)
		}
		if uint64(off)+uint64(vlen) > uint64(len(buf)) {
			return Meta{}, errors.New("file meta: element longer than the group")
		}
		val := buf[off : off+int(vlen)]
		switch elem {
		case 0x0002:
			m.SOPClassUID = uid(val)
		case 0x0003:
			m.SOPInstanceUID = uid(val)
		case 0x0010:
			m.TransferSyntax = uid(val)
		}
		buf = buf[off+int(vlen):]
	}
	if m.SOPClassUID == "" || m.SOPInstanceUID == "" {
		return m, errors.New("no SOP Class or SOP Instance UID in the file meta: the file is not a storable DICOM instance")
	}
	if !validUID(m.SOPClassUID) || !validUID(m.SOPInstanceUID) {
		return m, errors.New("the file meta's SOP Class or SOP Instance UID is not a valid UID")
	}
	return m, nil
}

// uid trims the padding a UI value carries (NUL, and spaces some writers
// add).
func uid(b []byte) string {
	return strings.TrimRight(string(bytes.TrimRight(b, "\x00")), " ")
}

// validUID reports whether s is a DICOM UID: digits and dots, at most 64
// characters.
func validUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}
