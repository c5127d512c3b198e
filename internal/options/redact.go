package options

import "strings"

// Redacted replaces the value of a sensitive option wherever options are
// shown outside the job's script: the job as it travels (status, queue,
// admin queue, events), logs and audit records.
const Redacted = "[redacted]"

// sensitiveKeys are the options that carry patient data: the identity of
// a DICOM series (docs/PACS.md). Compared in lower case, as option keys
// that differ only in case are refused.
var sensitiveKeys = map[string]bool{
	"patient_id":             true,
	"patient_name":           true,
	"patient_birth_date":     true,
	"patient_sex":            true,
	"referring_physician":    true,
	"accession_number":       true,
	"study_instance_uid":     true,
	"study_id":               true,
	"study_date":             true,
	"study_time":             true,
	"frame_of_reference_uid": true,
}

// Sensitive reports whether the option key carries patient data: one of
// the identity options, or any key that starts with "patient_".
func Sensitive(key string) bool {
	k := strings.ToLower(key)
	return sensitiveKeys[k] || strings.HasPrefix(k, "patient_")
}

// Redact returns opts with the value of every sensitive option replaced by
// Redacted, for showing; opts itself is not changed (a copy is returned
// when something was replaced; nil stays nil). Only the job's script, and
// the DICOM files it writes, get the values.
func Redact(opts map[string]string) map[string]string {
	var out map[string]string
	for k := range opts {
		if !Sensitive(k) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(opts))
			for k2, v2 := range opts {
				out[k2] = v2
			}
		}
		out[k] = Redacted
	}
	if out == nil {
		return opts
	}
	return out
}
