package client

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	wire "github.com/blockwise/blockwise/api"
)

// Job documents.
type (
	Job        = wire.Job
	JobLog     = wire.JobLog
	JobLogLine = wire.JobLogLine
)

// JobFilter selects jobs in ListJobs; zero fields match all.
type JobFilter struct {
	State, Kind, Policy, Source string
	Since                       time.Time
	Limit                       int
}

// ListJobs lists the host's job history, newest first.
func (c *Client) ListJobs(ctx context.Context, f JobFilter) ([]Job, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "kind": f.Kind, "policy": f.Policy, "source": f.Source} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	p := "/v1/jobs"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out []Job
	return out, c.do(ctx, "GET", p, nil, &out)
}

// Job returns a job as it stands.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	var out Job
	return &out, c.do(ctx, "GET", "/v1/jobs/"+esc(id), nil, &out)
}

// WaitJob long-polls until the job ends or ctx is done.
func (c *Client) WaitJob(ctx context.Context, id string) (*Job, error) {
	for {
		var j Job
		if err := c.do(ctx, "GET", "/v1/jobs/"+esc(id)+"?wait="+pollSlice.String(), nil, &j); err != nil {
			return nil, err
		}
		if j.Done() {
			return &j, nil
		}
		if err := ctx.Err(); err != nil {
			return &j, err
		}
	}
}

// CancelJob asks a running job to stop (ErrJobEnded if it has ended).
func (c *Client) CancelJob(ctx context.Context, id string) (*Job, error) {
	var out Job
	return &out, c.do(ctx, "POST", "/v1/jobs/"+esc(id)+"/cancel", nil, &out)
}

// JobLogLines returns a job's log lines after line after; with wait > 0
// the host holds the answer until there is a new line or the job ends.
func (c *Client) JobLogLines(ctx context.Context, id string, after int, wait time.Duration) (*JobLog, error) {
	p := fmt.Sprintf("/v1/jobs/%s/log?after=%d", esc(id), after)
	if wait > 0 {
		p += "&wait=" + wait.String()
	}
	var out JobLog
	return &out, c.do(ctx, "GET", p, nil, &out)
}
