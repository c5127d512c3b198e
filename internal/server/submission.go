package server

import (
	"maps"

	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/protocol"
)

// sameJobSubmission reports whether sub announces what job j was made
// of: the same files (names and sizes, in order) and the same options. A
// known submission id is answered with its job only then; anything else
// under the same id is a conflict, not someone else's job.
func sameJobSubmission(j *jobs.Job, sub *protocol.Submit) bool {
	if len(j.Files) != len(sub.Files) {
		return false
	}
	for i, f := range j.Files {
		if f.Name != sub.Files[i].Name || f.Size != sub.Files[i].Size {
			return false
		}
	}
	return maps.Equal(j.Options, sub.Options)
}

// submissionConflict is the error for a known submission id announced
// with other files or options.
func submissionConflict(j *jobs.Job, sub *protocol.Submit) error {
	return protocol.Errorf(protocol.CodeConflict,
		"submission id %s belongs to job %s, made of other files or options: use another submission id", sub.SubmissionID, j.ID)
}
