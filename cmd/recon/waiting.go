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
