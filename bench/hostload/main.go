// Command hostload puts a running `blockwise serve` under load and
// watches its memory (issue 23, item 8):
//
//	hostload -datastore DIR -api 32 -readers 16 -duration 30s
//
// API clients loop over GET /v1/disks, GET /v1/disks/NAME and the changed
// areas of every disk; NBD readers copy whole disks with the real client
// (`nbdcopy URI null:`, up to 4 connections of 64 × 256 KiB requests in
// flight each) again and again. Every second it samples the host's
// VmRSS, RssAnon (the Go heap and stacks: ours) and RssFile (mapped file
// pages: the kernel's page cache, reclaimable), and prints errors,
// requests/s, API latency p50/p99, RSS at warm-up's end, peak and end.
// It exits 1 on any error or when -max-rss (MiB, anon+file) is exceeded.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/client"
)

type stats struct {
	mu      sync.Mutex
	lat     []time.Duration
	reqs    atomic.Int64
	errs    atomic.Int64
	copies  atomic.Int64
	lastErr atomic.Value
}

func (s *stats) fail(err error) {
	s.errs.Add(1)
	s.lastErr.Store(err.Error())
}

func main() {
	ds := flag.String("datastore", "", "the host's datastore (api.sock, nbd.sock)")
	nAPI := flag.Int("api", 32, "API clients")
	nRead := flag.Int("readers", 16, "concurrent nbdcopy readers")
	dur := flag.Duration("duration", 30*time.Second, "how long")
	warm := flag.Duration("warmup", 10*time.Second, "RSS after this long is the baseline of 'flat after warm-up'")
	pidFlag := flag.Int("pid", 0, "the host's pid (default: from api.sock's owner via pgrep)")
	maxRSS := flag.Int("max-rss", 0, "fail when RSS exceeds this many MiB (0: no bound)")
	flag.Parse()
	if err := run(*ds, *nAPI, *nRead, *dur, *warm, *pidFlag, *maxRSS); err != nil {
		fmt.Fprintln(os.Stderr, "hostload:", err)
		os.Exit(1)
	}
}

func run(ds string, nAPI, nRead int, dur, warm time.Duration, pid, maxRSS int) error {
	c, err := client.New("unix://"+filepath.Join(ds, "api.sock"), client.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	disks, err := c.ListDisks(ctx)
	if err != nil || len(disks) == 0 {
		return fmt.Errorf("list disks: %v (%d disks; create some first)", err, len(disks))
	}
	if pid == 0 {
		if pid, err = hostPID(ds); err != nil {
			return err
		}
	}
	// The changed-areas query needs a snapshot: one per disk, for the run.
	snap := fmt.Sprintf("hostload-%d", os.Getpid())
	for _, d := range disks {
		if _, err := c.CreateSnapshot(ctx, d.Name, snap, "hostload"); err != nil {
			return fmt.Errorf("snapshot %s: %w", d.Name, err)
		}
		defer c.DeleteSnapshot(context.Background(), d.Name, snap)
	}
	st := &stats{}
	var wg sync.WaitGroup
	for i := range nAPI {
		wg.Add(1)
		go func() { defer wg.Done(); apiLoop(ctx, c, disks[i%len(disks)].Name, snap, st) }()
	}
	for i := range nRead {
		wg.Add(1)
		go func() { defer wg.Done(); readLoop(ctx, ds, disks[i%len(disks)].Name, st) }()
	}
	samples := sampleRSS(ctx, pid)
	wg.Wait()
	return report(st, <-samples, dur, warm, maxRSS)
}

// hostPID finds the `blockwise serve` process of the datastore.
func hostPID(ds string) (int, error) {
	out, err := exec.Command("pgrep", "-f", "serve.*"+ds).Output()
	if err != nil {
		return 0, fmt.Errorf("no blockwise serve for %s (give -pid)", ds)
	}
	return strconv.Atoi(strings.Fields(string(out))[0])
}

func apiLoop(ctx context.Context, c *client.Client, disk, snap string, st *stats) {
	ops := []func() error{
		func() error { _, err := c.ListDisks(ctx); return err },
		func() error { _, err := c.Disk(ctx, disk); return err },
		func() error { _, err := c.QueryChangedAreas(ctx, disk, snap, "*", 0); return err },
	}
	for i := 0; ctx.Err() == nil; i++ {
		t := time.Now()
		err := ops[i%len(ops)]()
		if ctx.Err() != nil {
			return // the run ended mid-request: not an error of the host
		}
		if err != nil {
			st.fail(err)
			continue
		}
		st.reqs.Add(1)
		st.mu.Lock()
		st.lat = append(st.lat, time.Since(t))
		st.mu.Unlock()
	}
}

func readLoop(ctx context.Context, ds, disk string, st *stats) {
	uri := "nbd+unix:///" + disk + "?socket=" + filepath.Join(ds, "nbd.sock")
	for ctx.Err() == nil {
		t := time.Now()
		out, err := exec.CommandContext(ctx, "nbdcopy", uri, "null:").CombinedOutput()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			st.fail(fmt.Errorf("nbdcopy (after %v): %v: %s", time.Since(t).Round(time.Millisecond), err, out))
			continue
		}
		st.copies.Add(1)
	}
}

type rss struct{ total, anon, file int } // KiB

func readRSS(pid int) (r rss) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			r.total = v
		case "RssAnon:":
			r.anon = v
		case "RssFile:":
			r.file = v
		}
	}
	return r
}

// sampleRSS samples every second until ctx ends, then sends the samples.
func sampleRSS(ctx context.Context, pid int) <-chan []rss {
	ch := make(chan []rss, 1)
	go func() {
		s := []rss{readRSS(pid)}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				ch <- append(s, readRSS(pid))
				return
			case <-t.C:
				s = append(s, readRSS(pid))
			}
		}
	}()
	return ch
}

func report(st *stats, s []rss, dur, warm time.Duration, maxRSS int) error {
	slices.Sort(st.lat)
	pct := func(p float64) time.Duration {
		if len(st.lat) == 0 {
			return 0
		}
		return st.lat[min(len(st.lat)-1, int(p*float64(len(st.lat))))]
	}
	var peak rss
	for _, r := range s {
		if r.total > peak.total {
			peak = r
		}
	}
	w := s[min(len(s)-1, int(warm/time.Second))]
	end := s[len(s)-1]
	fmt.Printf("%.0f s: %d API requests (%.0f/s, p50 %v, p99 %v), %d whole-disk nbdcopy reads, %d errors\n",
		dur.Seconds(), st.reqs.Load(), float64(st.reqs.Load())/dur.Seconds(), pct(0.5), pct(0.99), st.copies.Load(), st.errs.Load())
	fmt.Printf("host RSS MiB (anon = Go heap and stacks, file = mapped page cache): start %d (anon %d), after warm-up %d (anon %d), peak %d (anon %d, file %d), end %d (anon %d)\n",
		s[0].total>>10, s[0].anon>>10, w.total>>10, w.anon>>10, peak.total>>10, peak.anon>>10, peak.file>>10, end.total>>10, end.anon>>10)
	if n := st.errs.Load(); n > 0 {
		return fmt.Errorf("%d errors, last: %v", n, st.lastErr.Load())
	}
	if maxRSS > 0 && peak.total>>10 > maxRSS {
		return fmt.Errorf("peak RSS %d MiB > %d MiB", peak.total>>10, maxRSS)
	}
	return nil
}
