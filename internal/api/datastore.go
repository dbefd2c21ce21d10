package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/host"
)

func (s *Server) datastoreSpace(r *http.Request) (int, any, error) {
	sp, err := s.h.Space()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, wireSpace(sp), nil
}

func wireSpace(sp host.Space) *wire.DatastoreSpace {
	return &wire.DatastoreSpace{Path: sp.Path, Capacity: sp.Capacity, Used: sp.Used, Free: sp.Free,
		Provisioned: sp.Provisioned, Disks: sp.Disks, Overcommit: sp.Overcommit, UsedRatio: sp.UsedRatio,
		WarnRatio: sp.Warn, Warning: sp.Warning}
}

func wireOffload(o host.Offload) *wire.Offload {
	return &wire.Offload{Reflink: o.Reflink, MaxCopySegment: o.MaxCopySegment, UnmapGranularity: o.UnmapGranularity,
		CompareAndWriteMax: o.CompareAndWriteMax, CompareAndWriteAlign: o.CompareAndWriteAlign}
}

// spaceCollector reports the datastore's space at scrape time.
type spaceCollector struct {
	h                                    *host.Host
	capacity, used, free, prov, over, wr *prometheus.Desc
	warning                              *prometheus.Desc
}

func newSpaceCollector(h *host.Host) *spaceCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("blockwise_datastore_"+name, help, nil, nil)
	}
	return &spaceCollector{h: h,
		capacity: d("capacity_bytes", "Size of the datastore's file system."),
		used:     d("used_bytes", "Bytes in use on the datastore's file system."),
		free:     d("free_bytes", "Bytes still free for the host on the datastore's file system."),
		prov:     d("provisioned_bytes", "Sum of the disks' sizes (thin: may exceed the capacity)."),
		over:     d("overcommit_ratio", "Provisioned bytes over capacity."),
		wr:       d("space_warn_ratio", "Soft threshold of use (serve --space-warn)."),
		warning:  d("space_warning", "1 while use is at or above the soft threshold."),
	}
}

// Describe implements prometheus.Collector.
func (c *spaceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.capacity, c.used, c.free, c.prov, c.over, c.wr, c.warning} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *spaceCollector) Collect(ch chan<- prometheus.Metric) {
	sp, err := c.h.Space()
	if err != nil {
		return
	}
	warn := 0.0
	if sp.Warning != "" {
		warn = 1
	}
	for d, v := range map[*prometheus.Desc]float64{c.capacity: float64(sp.Capacity), c.used: float64(sp.Used),
		c.free: float64(sp.Free), c.prov: float64(sp.Provisioned), c.over: sp.Overcommit, c.wr: sp.Warn, c.warning: warn} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
}
