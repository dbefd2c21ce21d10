// Command replwriter writes random 64 KiB blocks to an NBD export at a
// steady rate and reports the write latencies (bench/replication.sh):
//
//	replwriter -uri nbd+unix:///disk?socket=S -rate 20000000 -dur 60s
//
// It prints one JSON line: writes, bytes, p50/p99/max latency (ms). A
// flush follows every second of writes, as a guest's would.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	"github.com/blockwise/blockwise/internal/nbd"
)

func main() {
	uri := flag.String("uri", "", "NBD URI of the disk")
	rate := flag.Int64("rate", 20_000_000, "bytes a second")
	dur := flag.Duration("dur", 60*time.Second, "how long to write")
	flag.Parse()
	if err := run(*uri, *rate, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "replwriter:", err)
		os.Exit(1)
	}
}

func run(uri string, rate int64, dur time.Duration) error {
	ctx := context.Background()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	const block = 64 << 10
	buf := make([]byte, block)
	blocks := c.Size() / block
	interval := time.Duration(float64(time.Second) * block / float64(rate))
	var lat []time.Duration
	start := time.Now()
	lastFlush := start
	for i := 0; time.Since(start) < dur; i++ {
		next := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(next))
		for j := 0; j < len(buf); j += 8 {
			buf[j] = byte(rand.Uint32())
		}
		t0 := time.Now()
		if err := c.WriteAt(ctx, buf, rand.Int64N(blocks)*block, false); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		if time.Since(lastFlush) >= time.Second {
			if err := c.Flush(ctx); err != nil {
				return err
			}
			lastFlush = time.Now()
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"writes": len(lat), "bytes": int64(len(lat)) * block, "seconds": time.Since(start).Seconds(),
		"p50ms": ms(pct(0.50)), "p99ms": ms(pct(0.99)), "maxms": ms(lat[len(lat)-1]),
	})
}
