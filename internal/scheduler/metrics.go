package scheduler

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// collector reports each policy's state at scrape time: per source the
// last success, failures since and staleness; per policy the next run
// and the repository's size.
type collector struct {
	s                                   *Scheduler
	bytes                               *prometheus.CounterVec
	lastOK, failures, stale, next, size *prometheus.Desc
}

// Collector returns the scheduler's Prometheus collector.
func (s *Scheduler) Collector() prometheus.Collector {
	return &collector{s: s, bytes: s.bytes,
		lastOK:   prometheus.NewDesc("blockwise_policy_last_success_timestamp_seconds", "Unix time of the source's last successful backup by the policy (absent: never).", []string{"policy", "disk"}, nil),
		failures: prometheus.NewDesc("blockwise_policy_failures_since_success", "Failed or interrupted backups of the source since its last success.", []string{"policy", "disk"}, nil),
		stale:    prometheus.NewDesc("blockwise_policy_source_stale", "1 when the source's last success is older than the policy's staleness threshold.", []string{"policy", "disk"}, nil),
		next:     prometheus.NewDesc("blockwise_policy_next_run_timestamp_seconds", "Unix time of the policy's next scheduled backup.", []string{"policy"}, nil),
		size:     prometheus.NewDesc("blockwise_policy_repository_bytes", "The policy's repository: logical (every point in full), unique (after dedup), stored (packs).", []string{"policy", "kind"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastOK, c.failures, c.stale, c.next, c.size} {
		ch <- d
	}
	c.bytes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.bytes.Collect(ch)
	list, err := c.s.List(context.Background())
	if err != nil {
		return
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, p := range list {
		st := p.Status
		if st.NextRun != nil {
			g(c.next, float64(st.NextRun.Unix()), p.Name)
		}
		if r := st.Repository; r != nil {
			g(c.size, float64(r.Logical), p.Name, "logical")
			g(c.size, float64(r.Unique), p.Name, "unique")
			g(c.size, float64(r.Stored), p.Name, "stored")
		}
		for _, s := range st.Sources {
			if s.LastSuccess != nil {
				g(c.lastOK, float64(s.LastSuccess.Unix()), p.Name, s.Disk)
			}
			g(c.failures, float64(s.FailuresSince), p.Name, s.Disk)
			stale := 0.0
			if s.Stale {
				stale = 1
			}
			g(c.stale, stale, p.Name, s.Disk)
		}
	}
}

func newBytesCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "blockwise_backup_bytes_total",
		Help: "Bytes of the policies' successful backups since the host started: changed (CBT), read, new (not in the repository before), stored (after compression)."},
		[]string{"policy", "kind"})
}
