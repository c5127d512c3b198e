package options

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	many := make(map[string]string, MaxCount+1)
	for i := range MaxCount + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	tests := []struct {
		opts map[string]string
		want string // "" for valid, else part of the error
	}{
		{nil, ""},
		{map[string]string{"method": "pics", "ITER_2": ""}, ""},
		{map[string]string{strings.Repeat("k", MaxKeyLen): strings.Repeat("v", MaxValueBytes)}, ""},
		{map[string]string{strings.Repeat("k", MaxKeyLen+1): "v"}, "not valid"},
		{map[string]string{strings.Repeat("k", 200): "v"}, "…"}, // the key is cut short in the message
		{map[string]string{"": "v"}, "not valid"},
		{map[string]string{"a-b": "v"}, "not valid"},
		{map[string]string{"é": "v"}, "not valid"},
		{map[string]string{"PATH=x": "v"}, "not valid"},
		{map[string]string{"mode": "a", "MODE": "b"}, "differ only in case"},
		{map[string]string{"k": strings.Repeat("v", MaxValueBytes+1)}, "at most"},
		{map[string]string{"k": "a\x00b"}, "NUL"},
		{many, "too many options"},
	}
	for _, tt := range tests {
		err := Check(tt.opts)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Check(%d options) = %v, want valid", len(tt.opts), err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Check(%d options) = %v, want an error containing %q", len(tt.opts), err, tt.want)
		}
	}
}

// FuzzValidKey checks the key rule against the regular expression both the
// protocol and the runner used before they shared it.
func FuzzValidKey(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
	for _, s := range []string{"", "a", "A_9", "a-b", "é", "k\n", strings.Repeat("k", 64), strings.Repeat("k", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		if got, want := validKey(k), re.MatchString(k); got != want {
			t.Errorf("validKey(%q) = %v, the expression says %v", k, got, want)
		}
	})
}

// TestRedact: the identity options, and any patient_ key whatever its
// case, are shown as [redacted]; others as they are; the map passed in
// is not changed.
func TestRedact(t *testing.T) {
	in := map[string]string{
		"patient_id": "MRN1", "Patient_Name": "Doe^Jane", "patient_weight": "80", "patient_birth_date": "19700101",
		"patient_sex": "F", "referring_physician": "Who", "accession_number": "A1", "study_instance_uid": "1.2.3",
		"study_id": "S", "study_date": "20260101", "study_time": "1010", "frame_of_reference_uid": "1.2.4",
		"method": "pics", "series_number": "7", "fov_mm": "220",
	}
	out := Redact(in)
	for k, v := range out {
		keep := k == "method" || k == "series_number" || k == "fov_mm"
		if keep && v != in[k] || !keep && v != Redacted {
			t.Errorf("%s shown as %q", k, v)
		}
	}
	if len(out) != len(in) || in["patient_id"] != "MRN1" {
		t.Errorf("Redact changed its input or lost keys: %v", in)
	}
	if Redact(nil) != nil {
		t.Error("Redact(nil) is not nil")
	}
}
