package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/jobs"
)

// jobsOf returns the host's job history, or a problem when it has none.
func (s *Server) jobsOf() (*jobs.Store, error) {
	if s.jobs == nil {
		return nil, problem(http.StatusNotFound, wire.ProblemJobNotFound, "this host keeps no job history")
	}
	return s.jobs, nil
}

// jobProblem maps the store's sentinels.
func jobProblem(err error) error {
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return problem(http.StatusNotFound, wire.ProblemJobNotFound, err.Error())
	case errors.Is(err, jobs.ErrEnded):
		return problem(http.StatusConflict, wire.ProblemJobEnded, err.Error())
	}
	return err
}

// listJobs: GET /v1/jobs?state=&kind=&policy=&source=&since=RFC3339&limit=N
func (s *Server) listJobs(r *http.Request) (int, any, error) {
	st, err := s.jobsOf()
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	f := jobs.Filter{State: q.Get("state"), Kind: q.Get("kind"), Policy: q.Get("policy"), Source: q.Get("source")}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 {
			return 0, nil, badRequest(fmt.Sprintf("limit %q is not a count", v))
		}
	}
	if v := q.Get("since"); v != "" {
		if f.Since, err = time.Parse(time.RFC3339, v); err != nil {
			return 0, nil, badRequest(fmt.Sprintf("since %q is not an RFC 3339 time", v))
		}
	}
	list, err := st.List(f)
	if list == nil {
		list = []wire.Job{}
	}
	return http.StatusOK, list, err
}

// waitParam parses ?wait=DURATION (0 when absent), capped at maxWait.
func waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badRequest(fmt.Sprintf("wait %q is not a duration such as 30s", v))
	}
	return min(d, maxWait), nil
}

// getJob answers at once, or with ?wait=DURATION when the job ends or the
// wait runs out.
func (s *Server) getJob(r *http.Request) (int, any, error) {
	st, err := s.jobsOf()
	if err != nil {
		return 0, nil, err
	}
	wait, err := waitParam(r)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		ch := st.Changed()
		j, err := st.Get(r.PathValue("id"))
		if err != nil || j.Done() || wait == 0 {
			return http.StatusOK, j, jobProblem(err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return http.StatusOK, j, nil
		}
	}
}

func (s *Server) cancelJob(r *http.Request) (int, any, error) {
	st, err := s.jobsOf()
	if err != nil {
		return 0, nil, err
	}
	j, err := st.Cancel(r.PathValue("id"))
	return http.StatusAccepted, j, jobProblem(err)
}

// jobLog: GET /v1/jobs/{id}/log?after=N&wait=D returns the lines after
// N; with wait, it waits for a new line or the job's end (log -f).
func (s *Server) jobLog(r *http.Request) (int, any, error) {
	st, err := s.jobsOf()
	if err != nil {
		return 0, nil, err
	}
	after := 0
	if v := r.URL.Query().Get("after"); v != "" {
		if after, err = strconv.Atoi(v); err != nil || after < 0 {
			return 0, nil, badRequest(fmt.Sprintf("after %q is not a line number", v))
		}
	}
	wait, err := waitParam(r)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	id := r.PathValue("id")
	for {
		ch := st.Changed()
		j, err := st.Get(id)
		if err != nil {
			return 0, nil, jobProblem(err)
		}
		lines, err := st.Log(id, after)
		if err != nil || len(lines) > 0 || j.Done() || wait == 0 {
			return http.StatusOK, wire.JobLog{Job: j, Lines: lines}, jobProblem(err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return http.StatusOK, wire.JobLog{Job: j, Lines: lines}, nil
		}
	}
}
