package dicom

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The job options that carry a series' identity and geometry. Each is
// checked against the rules of its attribute's value representation
// (PS3.5 6.2) before anything is written.
const (
	OptPatientID           = "patient_id"             // (0010,0020) LO
	OptPatientName         = "patient_name"           // (0010,0010) PN
	OptPatientBirthDate    = "patient_birth_date"     // (0010,0030) DA
	OptPatientSex          = "patient_sex"            // (0010,0040) CS: M, F or O
	OptStudyInstanceUID    = "study_instance_uid"     // (0020,000D) UI
	OptAccessionNumber     = "accession_number"       // (0008,0050) SH
	OptStudyID             = "study_id"               // (0020,0010) SH
	OptStudyDate           = "study_date"             // (0008,0020) DA
	OptStudyTime           = "study_time"             // (0008,0030) TM
	OptReferringPhysician  = "referring_physician"    // (0008,0090) PN
	OptFrameOfReferenceUID = "frame_of_reference_uid" // (0020,0052) UI
	OptSeriesNumber        = "series_number"          // (0020,0011) IS
	OptSeriesDescription   = "series_description"     // (0008,103E) LO
	OptFOV                 = "fov_mm"                 // field of view: "220" or "220,180" (rows, columns)
	OptSliceThickness      = "slice_thickness_mm"     // also the spacing of a 3D stack's slices
)

// IdentityOptions lists the identity options, in the order `recon submit
// --dicom-ref` reports them.
var IdentityOptions = []string{
	OptPatientID, OptPatientName, OptPatientBirthDate, OptPatientSex,
	OptStudyInstanceUID, OptAccessionNumber, OptStudyID, OptStudyDate, OptStudyTime,
	OptReferringPhysician, OptFrameOfReferenceUID,
}

// Placeholders and defaults for what the job's options do not say.
const (
	PlaceholderPatientName     = "RECON^PHANTOM"
	PlaceholderPatientIDPrefix = "RECON-" // + the job id
	// PlaceholderStudyID is the StudyID of a study recon makes (no
	// study_instance_uid given) when no study_id is given.
	PlaceholderStudyID      = "RECON"
	DefaultSeriesNumber     = 900
	DefaultPixelSpacingMM   = 1.0 // when fov_mm is not given
	DefaultSliceThicknessMM = 1.0
	// MaxGeometryMM bounds fov_mm and slice_thickness_mm: 10 m.
	MaxGeometryMM = 10000
)

// Identity is who and what a series belongs to. The zero value of a field
// means "not given": the writer then uses a placeholder or a new UID.
type Identity struct {
	PatientID, PatientName, PatientBirthDate, PatientSex string
	StudyInstanceUID, AccessionNumber, StudyID           string
	StudyDate, StudyTime, ReferringPhysician             string
	FrameOfReferenceUID, SeriesDescription               string
	SeriesNumber                                         int
	// Placeholder reports that the patient was not named by the job: the
	// writer marks the images as such.
	Placeholder bool
}

// Geometry is the size of the pixels and slices, in millimetres. Zero
// means the stated default.
type Geometry struct {
	// FOVRows is the image's height (Rows × the spacing between rows),
	// FOVCols its width (Columns × the spacing between columns).
	FOVRows, FOVCols float64
	SliceThickness   float64
}

// FromOptions reads a series' identity and geometry from job options and
// checks every value given. Its errors name the option, never the value
// of an identity option (patient data: the error reaches the job's record
// and the logs). A patient that is not named becomes
// PlaceholderPatientName with PatientID PlaceholderPatientIDPrefix+jobID.
func FromOptions(opts map[string]string, jobID string) (Identity, Geometry, error) {
	var id Identity
	var g Geometry
	str := func(key string, dst *string, check func(string) error) error {
		v, ok := opts[key]
		if !ok {
			return nil
		}
		v = strings.TrimSpace(v)
		if err := check(v); err != nil {
			return fmt.Errorf("option %s: %w", key, err)
		}
		*dst = v
		return nil
	}
	checks := []struct {
		key   string
		dst   *string
		check func(string) error
	}{
		{OptPatientID, &id.PatientID, checkLO},
		{OptPatientName, &id.PatientName, checkPN},
		{OptPatientBirthDate, &id.PatientBirthDate, checkDA},
		{OptPatientSex, &id.PatientSex, checkSex},
		{OptStudyInstanceUID, &id.StudyInstanceUID, checkUIDOption},
		{OptAccessionNumber, &id.AccessionNumber, checkSH},
		{OptStudyID, &id.StudyID, checkSH},
		{OptStudyDate, &id.StudyDate, checkDA},
		{OptStudyTime, &id.StudyTime, checkTM},
		{OptReferringPhysician, &id.ReferringPhysician, checkPN},
		{OptFrameOfReferenceUID, &id.FrameOfReferenceUID, checkUIDOption},
		{OptSeriesDescription, &id.SeriesDescription, checkLO},
	}
	for _, c := range checks {
		if err := str(c.key, c.dst, c.check); err != nil {
			return Identity{}, Geometry{}, err
		}
	}
	if v, ok := opts[OptSeriesNumber]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 1<<31-1 {
			return Identity{}, Geometry{}, fmt.Errorf("option %s: %q is not a whole number from 0 to %d", OptSeriesNumber, v, 1<<31-1)
		}
		id.SeriesNumber = n
	} else {
		id.SeriesNumber = DefaultSeriesNumber
	}
	if v, ok := opts[OptFOV]; ok {
		parts := strings.Split(v, ",")
		if len(parts) > 2 {
			return Identity{}, Geometry{}, fmt.Errorf("option %s: %q: give one size in mm, or two (rows,columns)", OptFOV, v)
		}
		var mm [2]float64
		for i, p := range parts {
			f, err := positiveMM(p)
			if err != nil {
				return Identity{}, Geometry{}, fmt.Errorf("option %s: %w", OptFOV, err)
			}
			mm[i] = f
		}
		if len(parts) == 1 {
			mm[1] = mm[0]
		}
		g.FOVRows, g.FOVCols = mm[0], mm[1]
	}
	if v, ok := opts[OptSliceThickness]; ok {
		f, err := positiveMM(v)
		if err != nil {
			return Identity{}, Geometry{}, fmt.Errorf("option %s: %w", OptSliceThickness, err)
		}
		g.SliceThickness = f
	}
	if id.PatientName == "" && id.PatientID == "" {
		id.Placeholder = true
		id.PatientName = PlaceholderPatientName
	}
	if id.PatientID == "" {
		id.PatientID = PlaceholderPatientIDPrefix + jobID
		if err := checkLO(id.PatientID); err != nil {
			return Identity{}, Geometry{}, fmt.Errorf("job id as patient id: %w", err)
		}
	}
	return id, g, nil
}

func positiveMM(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(f > 0) || f > MaxGeometryMM {
		return 0, fmt.Errorf("%q is not a size in mm above 0 and at most %d", s, MaxGeometryMM)
	}
	return f, nil
}

// checkText checks a string value of at most maxChars characters: valid
// UTF-8 (the files say ISO_IR 192), no control characters, no backslash
// (the value separator).
func checkText(s string, maxChars int) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > maxChars {
		return fmt.Errorf("has %d characters, at most %d", n, maxChars)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("contains the control character %U", r)
		}
		if r == '\\' {
			return errors.New("contains a backslash")
		}
	}
	return nil
}

func checkLO(s string) error { return checkText(s, 64) }
func checkSH(s string) error { return checkText(s, 16) }

// checkPN checks a person name: at most three component groups
// (alphabetic=ideographic=phonetic), each of at most five components
// separated by ^ and at most 64 characters.
func checkPN(s string) error {
	if err := checkText(s, 3*64+2); err != nil {
		return err
	}
	groups := strings.Split(s, "=")
	if len(groups) > 3 {
		return fmt.Errorf("has %d component groups (separated by =), at most 3", len(groups))
	}
	for _, g := range groups {
		if n := utf8.RuneCountInString(g); n > 64 {
			return fmt.Errorf("has a component group of %d characters, at most 64", n)
		}
		if n := strings.Count(g, "^") + 1; n > 5 {
			return fmt.Errorf("has %d components (separated by ^), at most 5", n)
		}
	}
	return nil
}

// checkDA checks a date YYYYMMDD that exists in the calendar; "" is valid.
func checkDA(s string) error {
	if s == "" {
		return nil
	}
	if len(s) != 8 || strings.Trim(s, "0123456789") != "" {
		return errors.New("is not a date YYYYMMDD")
	}
	if _, err := time.Parse("20060102", s); err != nil {
		return errors.New("is not a date YYYYMMDD")
	}
	return nil
}

// checkTM checks a time HH, HHMM, HHMMSS or HHMMSS.F to HHMMSS.FFFFFF;
// "" is valid.
func checkTM(s string) error {
	if s == "" {
		return nil
	}
	bad := errors.New("is not a time HHMMSS (HH, HHMM and HHMMSS.FFFFFF too)")
	whole, frac, hasFrac := strings.Cut(s, ".")
	if hasFrac && (len(whole) != 6 || len(frac) < 1 || len(frac) > 6 || strings.Trim(frac, "0123456789") != "") {
		return bad
	}
	if (len(whole) != 2 && len(whole) != 4 && len(whole) != 6) || strings.Trim(whole, "0123456789") != "" {
		return bad
	}
	limits := []int{23, 59, 60} // 60: a leap second
	for i := 0; i < len(whole); i += 2 {
		if n, _ := strconv.Atoi(whole[i : i+2]); n > limits[i/2] {
			return bad
		}
	}
	return nil
}

func checkSex(s string) error {
	switch s {
	case "", "M", "F", "O":
		return nil
	}
	return errors.New("is not M, F or O")
}

func checkUIDOption(s string) error {
	if !ValidUID(s) {
		return errors.New("is not a UID (digits in components separated by dots, no leading zeros, at most 64 characters)")
	}
	return nil
}
