// Command consolegen prepares a datastore for bench/console.sh: DISKS
// disks (1 MiB, thin) and a job history of POINTS backups per disk
// spread over the last 89 days, as the host's scheduler would have
// recorded them (with summaries), and a policy selecting every disk.
//
//	consolegen -datastore DIR -disks 1000 -points 100
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/jobs"
)

func main() {
	dir := flag.String("datastore", "", "datastore directory (created)")
	disks := flag.Int("disks", 1000, "disks")
	points := flag.Int("points", 100, "backups per disk")
	flag.Parse()
	if err := run(*dir, *disks, *points); err != nil {
		fmt.Fprintln(os.Stderr, "consolegen:", err)
		os.Exit(1)
	}
}

func run(dir string, disks, points int) error {
	if dir == "" {
		return fmt.Errorf("-datastore is required")
	}
	if err := makeDisks(dir, disks); err != nil {
		return err
	}
	if err := makeHistory(dir, disks, points); err != nil {
		return err
	}
	return makePolicy(dir)
}

func name(i int) string { return fmt.Sprintf("d%04d", i) }

func makeDisks(dir string, n int) error {
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		return err
	}
	h := host.New(ds)
	defer h.Close()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := h.Create(name(i), 1<<20, disk.Options{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// makeHistory records the backups, oldest first, over the last 89 days.
func makeHistory(dir string, disks, points int) error {
	start := time.Now().Add(-89 * 24 * time.Hour).UTC()
	step := 89 * 24 * time.Hour / time.Duration(points)
	st, err := jobs.Open(filepath.Join(dir, "jobs.db"), jobs.Options{NoSync: true})
	if err != nil {
		return err
	}
	for p := range points {
		batch := make([]wire.Job, 0, disks)
		for d := range disks {
			created := start.Add(time.Duration(p)*step + time.Duration(d)*time.Second)
			ended := created.Add(3 * time.Second)
			sum, _ := json.Marshal(backup.Summary{ID: fmt.Sprintf("%064x", p*disks+d+1), Disk: name(d), Mode: "incremental", Size: 1 << 30,
				Changed: 8 << 20, Read: 8 << 20, NewBytes: 6 << 20, Stored: 3 << 20, Seconds: 3, Transport: "san",
				Phases: map[string]float64{"snapshot": 0.1, "copy": 2.5, "commit": 0.3}})
			j := wire.Job{Kind: wire.JobBackup, Policy: "bench", Source: name(d), State: wire.JobSucceeded, Attempt: 1,
				Created: created, Started: &created, Ended: &ended, Summary: sum,
				Progress: wire.JobProgress{Stages: []wire.JobStage{{Name: "prepare", Seconds: 0.2}, {Name: "copy", Seconds: 2.8}}}}
			if (p+d)%97 == 0 {
				j.State, j.Summary, j.Error = wire.JobFailed, nil, "synthetic failure"
			}
			batch = append(batch, j)
		}
		if _, err := st.Import(batch); err != nil {
			return err
		}
	}
	return st.Close()
}

func makePolicy(dir string) error {
	now := time.Now().UTC()
	rec := map[string]any{"bench": map[string]any{"policy": wire.Policy{Name: "bench", Sources: wire.PolicySources{Globs: []string{"d*"}},
		Schedule: "@yearly", Repository: wire.PolicyRepository{Location: filepath.Join(dir, "no-repo")}, Created: now}, "lastRun": now}}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "policies.json"), b, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "policy-credentials.json"), []byte(`{"bench":{"password":"bench"}}`), 0o600)
}
