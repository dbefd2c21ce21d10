package replica

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the groups' status at scrape time.
type collector struct{ s *Service }

var (
	mAge = prometheus.NewDesc("blockwise_replication_last_point_age_seconds",
		"Age of the group's last complete point on its target.", []string{"group"}, nil)
	mRPO        = prometheus.NewDesc("blockwise_replication_rpo_seconds", "The group's RPO.", []string{"group"}, nil)
	mViolations = prometheus.NewDesc("blockwise_replication_rpo_violations_total",
		"Times the group's last point grew older than its RPO.", []string{"group"}, nil)
	mBytes = prometheus.NewDesc("blockwise_replication_cycle_bytes",
		"Changed bytes sent by the group's last cycle.", []string{"group"}, nil)
	mWire = prometheus.NewDesc("blockwise_replication_cycle_wire_bytes",
		"Bytes on the wire (request bodies) of the group's last cycle.", []string{"group"}, nil)
	mRate = prometheus.NewDesc("blockwise_replication_cycle_rate_bytes_per_second",
		"Transfer rate of the group's last cycle.", []string{"group"}, nil)
	mState = prometheus.NewDesc("blockwise_replication_state",
		"1 for the group's current state.", []string{"group", "state"}, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mAge, mRPO, mViolations, mBytes, mWire, mRate, mState} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	groups := make([]*group, 0, len(c.s.groups))
	for _, g := range c.s.groups {
		groups = append(groups, g)
	}
	c.s.mu.Unlock()
	for _, g := range groups {
		g.mu.Lock()
		v := g.view()
		viol := g.st.Violations
		g.mu.Unlock()
		gauge := func(d *prometheus.Desc, x float64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, append([]string{v.Name}, l...)...)
		}
		gauge(mAge, v.LastPointAge)
		gauge(mRPO, g.st.Config.RPO.Seconds())
		ch <- prometheus.MustNewConstMetric(mViolations, prometheus.CounterValue, float64(viol), v.Name)
		if v.LastCycle != nil {
			gauge(mBytes, float64(v.LastCycle.Bytes))
			gauge(mWire, float64(v.LastCycle.WireBytes))
			gauge(mRate, v.LastCycle.Rate)
		}
		gauge(mState, 1, v.State)
	}
}
