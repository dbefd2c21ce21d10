package main

import (
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
)

// backupOutcome is one disk's backup, for --metrics-file.
type backupOutcome struct {
	disk string
	res  *backup.Result // nil: the backup failed
	at   time.Time      // when it ended
}

// lastSuccessMetric is what staleness alerts look at, so a failed run must
// not erase it: it is carried over from the file's previous contents.
const lastSuccessMetric = "blockwise_backup_last_success_timestamp_seconds"

// writeBackupMetrics writes the outcomes as a Prometheus text file (for
// node_exporter's textfile collector), atomically.
func writeBackupMetrics(path string, outs []backupOutcome) error {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"disk"})
		reg.MustRegister(v)
		return v
	}
	success := gauge("blockwise_backup_success", "1 if the disk's last backup succeeded, 0 if it failed.")
	lastRun := gauge("blockwise_backup_last_run_timestamp_seconds", "When the disk's last backup ended, successful or not.")
	lastOK := gauge(lastSuccessMetric, "When the disk's last successful backup ended.")
	incr := gauge("blockwise_backup_incremental", "1 if the last successful backup was a CBT incremental, 0 if full.")
	dur := gauge("blockwise_backup_duration_seconds", "Duration of the last successful backup.")
	bytes := map[string]*prometheus.GaugeVec{
		"changed": gauge("blockwise_backup_changed_bytes", "Bytes CBT reported changed (allocated, for a full backup)."),
		"read":    gauge("blockwise_backup_read_bytes", "Bytes read from the snapshot."),
		"new":     gauge("blockwise_backup_new_bytes", "Bytes of chunks the repository did not have."),
		"stored":  gauge("blockwise_backup_stored_bytes", "Bytes written to the repository (packs, index, manifest)."),
	}
	for disk, t := range previousGauge(path, lastSuccessMetric, "disk") {
		lastOK.WithLabelValues(disk).Set(t)
	}
	for _, o := range outs {
		lastRun.WithLabelValues(o.disk).Set(unixSeconds(o.at))
		if o.res == nil {
			success.WithLabelValues(o.disk).Set(0)
			continue
		}
		r := o.res
		success.WithLabelValues(o.disk).Set(1)
		lastOK.WithLabelValues(o.disk).Set(unixSeconds(o.at))
		incr.WithLabelValues(o.disk).Set(map[bool]float64{true: 1}[r.Mode == "incremental"])
		dur.WithLabelValues(o.disk).Set(r.Duration.Seconds())
		bytes["changed"].WithLabelValues(o.disk).Set(float64(r.AreasBytes))
		bytes["read"].WithLabelValues(o.disk).Set(float64(r.ReadBytes))
		bytes["new"].WithLabelValues(o.disk).Set(float64(r.Manifest.Stats.NewBytes))
		bytes["stored"].WithLabelValues(o.disk).Set(float64(r.Manifest.Stats.StoredBytes))
	}
	return prometheus.WriteToTextfile(path, reg)
}

// previousGauge reads one gauge of a metrics file written before, by the
// value of one label; a missing or unreadable file has none.
func previousGauge(path, metric, label string) map[string]float64 {
	out := map[string]float64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil || fams[metric] == nil {
		return out
	}
	for _, m := range fams[metric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && m.GetGauge() != nil {
				out[l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// checkOutcome is one run of check, for --metrics-file.
type checkOutcome struct {
	mode string            // "structure", "read-data" or "read-data-subset"
	res  *repo.CheckResult // nil: the check could not run
	took time.Duration
	at   time.Time
}

const checkLastSuccessMetric = "blockwise_check_last_success_timestamp_seconds"

// writeCheckMetrics writes a check's outcome as a Prometheus text file,
// atomically. The last success of each mode is carried over from the
// file's previous contents, as for backups, so one alert catches failed
// and missed checks alike.
func writeCheckMetrics(path string, o checkOutcome) error {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string) prometheus.Gauge {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"mode"})
		reg.MustRegister(v)
		return v.WithLabelValues(o.mode)
	}
	lastOK := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: checkLastSuccessMetric, Help: "When the last check of this mode that found no error ended."}, []string{"mode"})
	reg.MustRegister(lastOK)
	for mode, t := range previousGauge(path, checkLastSuccessMetric, "mode") {
		lastOK.WithLabelValues(mode).Set(t)
	}
	success := gauge("blockwise_check_success", "1 if the last check ran and found no error, 0 otherwise.")
	gauge("blockwise_check_last_run_timestamp_seconds", "When the last check ended, whatever its outcome.").Set(unixSeconds(o.at))
	if o.res == nil || len(o.res.Errors) > 0 {
		success.Set(0)
	} else {
		success.Set(1)
		lastOK.WithLabelValues(o.mode).Set(unixSeconds(o.at))
	}
	if o.res != nil {
		gauge("blockwise_check_errors", "Errors the last check found.").Set(float64(len(o.res.Errors)))
		gauge("blockwise_check_warnings", "Warnings of the last check (e.g. packs left by interrupted backups).").Set(float64(len(o.res.Warnings)))
		gauge("blockwise_check_packs", "Packs the index names.").Set(float64(o.res.Packs))
		gauge("blockwise_check_packs_read", "Packs the last check read and verified.").Set(float64(o.res.PacksRead))
		gauge("blockwise_check_restore_points", "Restore points the last check walked.").Set(float64(o.res.Manifests))
		gauge("blockwise_check_duration_seconds", "Duration of the last check.").Set(o.took.Seconds())
	}
	return prometheus.WriteToTextfile(path, reg)
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
