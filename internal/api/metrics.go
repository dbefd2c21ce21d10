package api

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blockwise/blockwise/internal/host"
)

// diskCollector reads the host's open disks at scrape time, so nothing
// on the I/O path touches Prometheus.
type diskCollector struct {
	h                                   *host.Host
	readBytes, writeBytes, reads, write *prometheus.Desc
	dirty, snaps, oldest, size, alloc   *prometheus.Desc
	exports                             *prometheus.Desc
}

func newDiskCollector(h *host.Host) *diskCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("blockwise_"+name, help, []string{"disk"}, nil)
	}
	return &diskCollector{
		h:          h,
		readBytes:  d("disk_read_bytes_total", "Bytes read through NBD."),
		writeBytes: d("disk_written_bytes_total", "Bytes written through NBD."),
		reads:      d("disk_reads_total", "NBD read requests."),
		write:      d("disk_writes_total", "NBD write requests."),
		dirty:      d("disk_cbt_dirty_blocks", "CBT blocks changed since the last snapshot."),
		snaps:      d("disk_snapshots", "Snapshots of the disk."),
		oldest:     d("disk_oldest_snapshot_age_seconds", "Age of the disk's oldest snapshot."),
		size:       d("disk_size_bytes", "Provisioned size."),
		alloc:      d("disk_allocated_bytes", "Bytes allocated in the disk's files."),
		exports:    d("nbd_open_exports", "NBD exports (connections) open on the disk."),
	}
}

// Describe implements prometheus.Collector.
func (c *diskCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.readBytes, c.writeBytes, c.reads, c.write, c.dirty, c.snaps, c.oldest, c.size, c.alloc, c.exports} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one sample per disk and counter.
func (c *diskCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, name string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
	}
	gauge := func(d *prometheus.Desc, v float64, name string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
	}
	for _, ds := range c.h.OpenDisks() {
		counter(c.readBytes, ds.IO.ReadBytes, ds.Name)
		counter(c.writeBytes, ds.IO.WriteBytes, ds.Name)
		counter(c.reads, ds.IO.ReadOps, ds.Name)
		counter(c.write, ds.IO.WriteOps, ds.Name)
		gauge(c.exports, float64(ds.OpenExports), ds.Name)
		st, err := ds.Disk.Stat()
		if err != nil {
			continue // closing; the I/O counters above are still right
		}
		gauge(c.size, float64(st.Size), ds.Name)
		gauge(c.alloc, float64(st.Allocated), ds.Name)
		gauge(c.snaps, float64(len(st.Snapshots)), ds.Name)
		if len(st.Snapshots) > 0 {
			gauge(c.oldest, time.Since(st.Snapshots[0].Created).Seconds(), ds.Name)
		}
		if st.CBT != nil {
			gauge(c.dirty, float64(st.CBT.DirtyBlocks), ds.Name)
		}
	}
}

func (s *Server) registerMetrics() {
	s.reg.MustRegister(newDiskCollector(s.h), newSpaceCollector(s.h),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slogAdapter{s}})
}

type slogAdapter struct{ s *Server }

// Println lets promhttp log its errors through the server's logger.
func (a slogAdapter) Println(v ...any) { a.s.log.Warn("metrics", "err", v) }
