package replica

import (
	"time"

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
	mReplicaPoints = prometheus.NewDesc("blockwise_replica_points",
		"Complete points this host keeps of a replica group.", []string{"group"}, nil)
	mReplicaAge = prometheus.NewDesc("blockwise_replica_last_point_age_seconds",
		"Age of the latest complete point this host keeps of a replica group.", []string{"group"}, nil)
	mReplicaState = prometheus.NewDesc("blockwise_replica_state",
		"1 for the replica group's state on this host.", []string{"group", "state"}, nil)
	mRootMismatches = prometheus.NewDesc("blockwise_replica_root_mismatches_total",
		"Points this host refused because their hash-tree root was not the source snapshot's.", []string{"group"}, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mAge, mRPO, mViolations, mBytes, mWire, mRate, mState, mReplicaPoints, mReplicaAge, mReplicaState, mRootMismatches} {
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
	c.collectReplicas(ch)
}

// collectReplicas exports the replica groups this host keeps (target).
func (c *collector) collectReplicas(ch chan<- prometheus.Metric) {
	names, _ := c.s.target.store.names()
	for _, n := range names {
		st, err := c.s.target.get(n)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(mReplicaPoints, prometheus.GaugeValue, float64(len(st.Points)), n)
		if len(st.Points) > 0 {
			age := time.Since(st.Points[len(st.Points)-1].Time).Seconds()
			ch <- prometheus.MustNewConstMetric(mReplicaAge, prometheus.GaugeValue, age, n)
		}
		ch <- prometheus.MustNewConstMetric(mReplicaState, prometheus.GaugeValue, 1, n, st.State)
		c.s.target.mm.Lock()
		mis := c.s.target.mismatches[n]
		c.s.target.mm.Unlock()
		ch <- prometheus.MustNewConstMetric(mRootMismatches, prometheus.CounterValue, float64(mis), n)
	}
}
