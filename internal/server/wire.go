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

// wireFiles is a file list as it travels in a job view; nil when empty
// (the field is then left out). A job view carries no BLAKE3 unless
// viewFor adds it: version-2 clients decode them strictly.
func wireFiles(fs []jobs.File) []protocol.FileSum { return manifestFiles(fs, false) }

// viewFor adds to info, a view of j, the BLAKE3 of j's files and results
// when hash, the session's end-to-end hash, is BLAKE3: only a session
// that chose BLAKE3 (protocol version 3) is shown them.
func viewFor(info *protocol.JobInfo, j *jobs.Job, hash string) *protocol.JobInfo {
	if hash != protocol.HashBLAKE3 {
		return info
	}
	info.Files = manifestFiles(j.Files, true)
	info.Results = manifestFiles(j.Results, true)
	return info
}

// manifestFiles is a job's result list as a fetch's manifest carries it:
// with each file's BLAKE3 when withBLAKE3 (the session chose BLAKE3), for
// the client to check the bytes against. nil when empty. The conversion
// of each file compiles only while the two structs have the same fields.
func manifestFiles(fs []jobs.File, withBLAKE3 bool) []protocol.FileSum {
	if len(fs) == 0 {
		return nil
	}
	out := make([]protocol.FileSum, len(fs))
	for i, f := range fs {
		out[i] = protocol.FileSum(f)
		if !withBLAKE3 {
			out[i].BLAKE3 = ""
		}
	}
	return out
}
