package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2EMetricsFile: backup --metrics-file writes each disk's outcome
// for node_exporter's textfile collector; a failed run marks the disk
// failed but keeps its last success time, which staleness alerts use.
func TestE2EMetricsFile(t *testing.T) {
	e := newE2E(t, true)
	e.must(t, "disk", "create", "vm", "--size", "8M")
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), 5)), 8<<20, 4, 256<<10))
	mf := filepath.Join(t.TempDir(), "blockwise.prom")
	if out, code := e.run(t, "backup", "vm", "nosuchdisk", "--metrics-file", mf); code == 0 {
		t.Fatalf("backup of a missing disk succeeded: %s", out)
	}
	m := promValues(t, mf)
	if m[`blockwise_backup_success{disk="vm"}`] != 1 || m[`blockwise_backup_success{disk="nosuchdisk"}`] != 0 ||
		m[`blockwise_backup_read_bytes{disk="vm"}`] <= 0 || m[`blockwise_backup_incremental{disk="vm"}`] != 0 {
		t.Fatalf("metrics after a full backup and a missing disk: %v", m)
	}
	ok := m[`blockwise_backup_last_success_timestamp_seconds{disk="vm"}`]
	if ok < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success %v", ok)
	}
	if _, present := m[`blockwise_backup_last_success_timestamp_seconds{disk="nosuchdisk"}`]; present {
		t.Fatal("a disk never backed up has a last success time")
	}
	// The repository cannot be opened: every disk fails, history stays.
	if out, code := e.runEnv(t, []string{"BLOCKWISE_PASSWORD=wrong"}, "backup", "vm", "--metrics-file", mf); code != exitUnauthorized {
		t.Fatalf("backup with a wrong password: exit %d: %s", code, out)
	}
	m = promValues(t, mf)
	if m[`blockwise_backup_success{disk="vm"}`] != 0 || m[`blockwise_backup_last_success_timestamp_seconds{disk="vm"}`] != ok ||
		m[`blockwise_backup_last_run_timestamp_seconds{disk="vm"}`] <= ok {
		t.Fatalf("metrics after a failed run: %v (last success was %v)", m, ok)
	}
	e.must(t, "backup", "vm", "--metrics-file", mf)
	if m = promValues(t, mf); m[`blockwise_backup_success{disk="vm"}`] != 1 || m[`blockwise_backup_incremental{disk="vm"}`] != 1 {
		t.Fatalf("metrics after an incremental: %v", m)
	}
}

// promValues reads a Prometheus text file into "name{labels}" -> value.
func promValues(t *testing.T, path string) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || strings.HasPrefix(l, "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("%s: %q", path, l)
		}
		out[f[0]] = v
	}
	return out
}
