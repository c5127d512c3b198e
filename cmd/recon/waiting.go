package main

import (
	"fmt"

	"github.com/recon-mri/recon/client"
)

// stateLine is a job's state as status, a waiting submit and fetch print
// it: a queued job with its position and why it waits
// ("queued (position 1): workers paused, CPU load 86% > 75%").
func stateLine(j *client.Job) string {
	line := string(j.State)
	if j.State != client.StateQueued {
		if j.Detail != "" { // where an outside executor holds it: "pending in Slurm: Resources"
			line += " (" + j.Detail + ")"
		}
		return line
	}
	if j.Position > 0 {
		line += fmt.Sprintf(" (position %d)", j.Position)
	}
	if j.WaitReason != "" {
		line += ": " + j.WaitReason
	}
	return line
}

// noResultsLine says why a fetch downloaded nothing: the job ended without
// results (cancelled, failed: and why), or its results were already
// downloaded or have expired.
func noResultsLine(j *client.Job) string {
	why := ""
	if j.Error != "" {
		why = ": " + j.Error
	}
	switch {
	case j.State == client.StateCancelled && len(j.Results) == 0:
		return "none: the job was cancelled and ended without results" + why + "; nothing downloaded"
	case j.State == client.StateFailed && len(j.Results) == 0:
		return "none: the job failed and ended without results" + why + "; nothing downloaded"
	case j.Delivered:
		return "already downloaded (the server removes results once a download is confirmed); nothing downloaded"
	case j.ResultsGone:
		return "removed from the server (RESULT_RETENTION_HOURS, or to make room); nothing downloaded"
	case len(j.Results) == 0:
		return "none: the script left no result files; nothing downloaded"
	}
	return "nothing downloaded"
}
