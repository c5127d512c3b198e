package server

import (
	"github.com/recon-mri/recon/internal/jobs"
	"github.com/recon-mri/recon/internal/options"
	"github.com/recon-mri/recon/internal/protocol"
)

// The server works on the store's types (jobs.Job, jobs.State, jobs.File)
// and turns them into the wire's here, as a reply is built; nothing comes
// back the other way (what a client sends is validated and built into a
// job by the submission). The protocol package does not import the store:
// wire_test.go pins the two sets of states together.

// jobInfo describes j as it travels. Position is left to the caller, who
// knows it.
func jobInfo(j *jobs.Job) *protocol.JobInfo {
	info := &protocol.JobInfo{
		JobID:        j.ID,
		State:        wireState(j.State),
		SubmittedAt:  j.SubmittedAt.UTC(),
		Files:        wireFiles(j.Files),
		Options:      options.Redact(j.Options), // patient data reaches only the script
		Attempts:     j.Attempts,
		ExitCode:     j.ExitCode,
		Error:        j.Error,
		Results:      wireFiles(j.Results),
		Delivered:    !j.DeliveredAt.IsZero(),
		ResultsGone:  !j.ResultsRemovedAt.IsZero(),
		ClientAddr:   j.ClientAddr,
		SubmissionID: j.SubmissionID,
		Identity:     j.Identity,
	}
	if !j.StartedAt.IsZero() {
		t := j.StartedAt.UTC()
		info.StartedAt = &t
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt.UTC()
		info.FinishedAt = &t
	}
	return info
}

// wireState is a job state as it travels: spelled as the store spells it.
func wireState(s jobs.State) protocol.JobState { return protocol.JobState(s) }

// wireFiles is a file list as it travels; nil when empty (the field is
// then left out). The conversion of each file compiles only while the two
// structs have the same fields.
func wireFiles(fs []jobs.File) []protocol.FileSum {
	if len(fs) == 0 {
		return nil
	}
	out := make([]protocol.FileSum, len(fs))
	for i, f := range fs {
		out[i] = protocol.FileSum(f)
	}
	return out
}
