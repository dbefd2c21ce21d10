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

// TestE2ECheckMetricsFile: check --metrics-file records each mode's
// outcome; a check that finds damage sets success to 0 and keeps every
// mode's last success time, and one that cannot run at all does too.
func TestE2ECheckMetricsFile(t *testing.T) {
	e := newE2E(t, true)
	e.vmPoint(t, 4<<20, 4, 24, "")
	mf := filepath.Join(t.TempDir(), "check.prom")
	e.must(t, "check", "--metrics-file", mf)
	e.must(t, "check", "--read-data", "--metrics-file", mf)
	m := promValues(t, mf)
	structOK := m[`blockwise_check_last_success_timestamp_seconds{mode="structure"}`]
	readOK := m[`blockwise_check_last_success_timestamp_seconds{mode="read-data"}`]
	if m[`blockwise_check_success{mode="read-data"}`] != 1 || m[`blockwise_check_errors{mode="read-data"}`] != 0 ||
		m[`blockwise_check_packs_read{mode="read-data"}`] < 1 || m[`blockwise_check_restore_points{mode="read-data"}`] != 1 ||
		structOK < float64(time.Now().Add(-time.Minute).Unix()) || readOK < structOK {
		t.Fatalf("metrics after clean checks: %v", m)
	}
	corruptLargestPack(t, e)
	if out, code := e.run(t, "check", "--read-data", "--metrics-file", mf); code != exitCheckFailed {
		t.Fatalf("check --read-data of a damaged pack: exit %d: %s", code, out)
	}
	m = promValues(t, mf)
	if m[`blockwise_check_success{mode="read-data"}`] != 0 || m[`blockwise_check_errors{mode="read-data"}`] < 1 ||
		m[`blockwise_check_last_success_timestamp_seconds{mode="read-data"}`] != readOK ||
		m[`blockwise_check_last_success_timestamp_seconds{mode="structure"}`] != structOK ||
		m[`blockwise_check_last_run_timestamp_seconds{mode="read-data"}`] <= readOK {
		t.Fatalf("metrics after a check that found damage: %v", m)
	}
	if out, code := e.runEnv(t, []string{"BLOCKWISE_PASSWORD=wrong"}, "check", "--metrics-file", mf); code != exitUnauthorized {
		t.Fatalf("check with a wrong password: exit %d: %s", code, out)
	}
	if m = promValues(t, mf); m[`blockwise_check_success{mode="structure"}`] != 0 ||
		m[`blockwise_check_last_success_timestamp_seconds{mode="structure"}`] != structOK {
		t.Fatalf("metrics after a check that could not run: %v", m)
	}
}
