package api

import (
	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/jobs"
)

// jobCollector reports the jobs running now, read at scrape time.
type jobCollector struct {
	st      *jobs.Store
	running *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *jobCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.running }

// Collect implements prometheus.Collector.
func (c *jobCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[string]int{}
	for _, k := range []string{wire.JobBackup, wire.JobRestore, wire.JobPrune, wire.JobCheck, wire.JobConsolidate, wire.JobReplication, wire.JobClone} {
		n[k] = 0 // a series for each kind, even at 0, so alerts see it
	}
	for _, j := range c.st.Active() {
		if j.State == wire.JobRunning {
			n[j.Kind]++
		}
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(v), k)
	}
}

// registerJobMetrics adds the job series: running jobs by kind, ended
// jobs by kind and state, and the seconds spent per stage (where the
// time goes: snapshot, copy, commit, retention...).
func (s *Server) registerJobMetrics() {
	if s.jobs == nil {
		return
	}
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "blockwise_jobs_ended_total",
		Help: "Jobs ended since the host started, by kind and end state."}, []string{"kind", "state"})
	stage := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "blockwise_job_stage_seconds_total",
		Help: "Wall seconds ended jobs spent per stage, by kind and stage."}, []string{"kind", "stage"})
	s.reg.MustRegister(ended, stage, &jobCollector{st: s.jobs,
		running: prometheus.NewDesc("blockwise_jobs_running", "Jobs running now, by kind.", []string{"kind"}, nil)})
	s.jobs.OnEnd(func(j wire.Job) {
		ended.WithLabelValues(j.Kind, j.State).Inc()
		for _, st := range j.Progress.Stages {
			stage.WithLabelValues(j.Kind, st.Name).Add(st.Seconds)
		}
	})
}
