package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/blockwise/blockwise/client"
)

func main() {
	api := flag.String("api", "", "unix:///path/api.sock")
	diskName := flag.String("disk", "", "disk")
	off := flag.Int64("offset", 0, "lease sector offset")
	n := flag.Int("n", 2000, "compare-and-writes")
	gap := flag.Duration("gap", time.Millisecond, "pause between them (a heartbeat's cadence, compressed)")
	flag.Parse()
	if err := run(*api, *diskName, *off, *n, *gap); err != nil {
		fmt.Fprintln(os.Stderr, "cawprobe:", err)
		os.Exit(1)
	}
}

func run(api, diskName string, off int64, n int, gap time.Duration) error {
	c, err := client.New(api, client.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	l := c.SectorLease(diskName, off, "cawprobe", time.Minute)
	if _, err := l.Acquire(ctx); err != nil {
		return err
	}
	lat := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := l.Renew(ctx); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(gap)
	}
	if _, err := l.Release(ctx); err != nil {
		return err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"n": n, "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "p999_ms": pct(0.999), "max_ms": pct(1),
	})
}
