package client

import (
	"context"
	"fmt"
)

// CollectOptions are the optional parts of Collect.
type CollectOptions struct {
	// OnEvent, if not nil, is called with every state the server reports
	// while the job has not ended (see Wait).
	OnEvent func(Job)
	// Progress, if not nil, is called as result bytes arrive.
	Progress Progress
	// Retry says how each step (waiting, then downloading) reconnects and
	// starts again after a Retryable error; its zero value: never.
	Retry Backoff
}

// Collect follows job until it ends, then downloads its results into dir
// (see WaitRetrying and FetchRetrying; each step retries as opts.Retry
// says, and its errors say which step failed). job is the job as last
// seen (from Submit or Job): a job that already ended is not waited for.
// It returns the job's final state and the files written, none when
// there is nothing to download: the job has no results, or they were
// already delivered or have expired (Job.Delivered, Job.ResultsGone).
func (c *Client) Collect(ctx context.Context, job *Job, dir string, opts *CollectOptions) (*Job, []LocalFile, error) {
	o := CollectOptions{}
	if opts != nil {
		o = *opts
	}
	id := job.JobID
	if !job.Terminal() {
		j, err := c.retryingStep(ctx, o.Retry, "wait for job "+id, func() (*Job, error) { return c.Wait(ctx, id, o.OnEvent) })
		if err != nil {
			return nil, nil, err
		}
		job = j
	}
	if len(job.Results) == 0 || job.Delivered || job.ResultsGone {
		return job, nil, nil
	}
	var files []LocalFile
	j, err := c.retryingStep(ctx, o.Retry, "fetch the results of job "+id, func() (j *Job, err error) {
		j, files, err = c.Fetch(ctx, id, dir, &FetchOptions{Progress: o.Progress})
		return j, err
	})
	if err != nil {
		return nil, nil, err
	}
	return j, files, nil
}

// retryingStep runs f as retrying does, naming step in its errors (the
// ones passed to b.OnRetry too).
func (c *Client) retryingStep(ctx context.Context, b Backoff, step string, f func() (*Job, error)) (*Job, error) {
	var j *Job
	err := c.retrying(ctx, b, func() (err error) {
		if j, err = f(); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		return nil
	})
	return j, err
}
