package disk

// Engine benchmarks (issue 2). bench/engine.sh runs them with fixed
// -benchtime counts and prints a table against the goals. Nothing here
// asserts a timing: the numbers are reported with b.ReportMetric.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/vfs"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40
)

// benchDisk creates a disk in a fresh datastore under b's temp dir.
func benchDisk(b *testing.B, size int64, opt Options) (*Datastore, *Disk) {
	b.Helper()
	ds, err := OpenDatastore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	d, err := ds.Create("d", size, opt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return ds, d
}

// fill writes random data over [0, n) in 1 MiB writes and flushes.
func fill(b *testing.B, d *Disk, n int64, seed uint64) {
	b.Helper()
	buf := make([]byte, mib)
	r := rand.New(rand.NewPCG(seed, 1))
	for off := int64(0); off < n; off += mib {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := d.WriteAt(buf[:min(mib, n-off)], off); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
}

func randBuf(n int, seed uint64) []byte {
	p := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// writeLoop issues b.N writes of size bs (random 4K-aligned offsets when
// random, else sequential, wrapping) with a Flush every 64 writes.
func writeLoop(b *testing.B, d *Disk, size int64, bs int, random bool) {
	b.Helper()
	p := randBuf(bs, 7)
	r := rand.New(rand.NewPCG(42, 3))
	slots := size / int64(bs)
	b.SetBytes(int64(bs))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		var off int64
		if random {
			off = r.Int64N(slots) * int64(bs)
		} else {
			off = int64(i) % slots * int64(bs)
		}
		p[0] = byte(i) // defeat any dedup
		if _, err := d.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := d.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(bs)/1e6/el.Seconds(), "MB/s")
}

// BenchmarkWrite: CBT on vs off, 4 KiB random and 1 MiB sequential writes,
// a Flush every 64 writes, on a flat disk and on a delta top.
func BenchmarkWrite(b *testing.B) {
	const size = 1 << 30
	for _, w := range []struct {
		name   string
		bs     int
		random bool
	}{{"rand4k", 4096, true}, {"seq1m", 1 << 20, false}} {
		for _, layout := range []string{"flat", "delta"} {
			for _, mode := range []string{"cbt", "nocbt"} {
				b.Run(fmt.Sprintf("%s/%s/%s", w.name, layout, mode), func(b *testing.B) {
					_, d := benchDisk(b, size, Options{DisableCBT: mode == "nocbt"})
					if layout == "delta" {
						if _, err := d.CreateSnapshot("base", ""); err != nil {
							b.Fatal(err)
						}
					}
					writeLoop(b, d, size, w.bs, w.random)
				})
			}
		}
	}
}

// --- QueryChangedAreas -------------------------------------------------

const qcaChildEnv = "BLOCKWISE_BENCH_QCA_CHILD"

// qcaFraction is the fraction of 64 KiB blocks changed, as 1/qcaDiv;
// BLOCKWISE_BENCH_QCA_DIV overrides the default 100 (1%).
func qcaDiv() int64 {
	if v, err := strconv.ParseInt(os.Getenv("BLOCKWISE_BENCH_QCA_DIV"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 100
}

// queryAll pages through every ChangedAreas page; it returns the number of
// areas and pages.
func queryAll(s *Snapshot, changeID string) (areas, pages int, err error) {
	for off := int64(0); off < s.Size(); {
		res, err := s.ChangedAreas(off, changeID)
		if err != nil {
			return 0, 0, err
		}
		areas += len(res.ChangedArea)
		pages++
		if res.Length <= 0 {
			return 0, 0, fmt.Errorf("page at %d has length %d", off, res.Length)
		}
		off = res.StartOffset + res.Length
	}
	return areas, pages, nil
}

// procStatus returns VmRSS and VmHWM in MiB.
func procStatus() (rss, hwm float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1, -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fs[1], 64)
		switch fs[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

type qcaChildResult struct {
	OpenMs, QueryMs, RSSMiB, HWMMiB float64
	Areas, Pages                    int
}

// TestBenchQueryChild is the measuring child of BenchmarkQueryChangedAreas:
// a fresh process opens the disk, queries, and reports its RSS. It does
// nothing in a normal test run.
func TestBenchQueryChild(t *testing.T) {
	dir := os.Getenv(qcaChildEnv)
	if dir == "" {
		t.Skip("benchmark helper")
	}
	res, err := qcaMeasure(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func qcaMeasure(dir string, runs int) (qcaChildResult, error) {
	var res qcaChildResult
	t0 := time.Now()
	ds, err := OpenDatastore(dir)
	if err != nil {
		return res, err
	}
	d, err := ds.Open("d")
	if err != nil {
		return res, err
	}
	defer d.Close()
	s, err := d.OpenSnapshot("s2")
	if err != nil {
		return res, err
	}
	defer s.Close()
	res.OpenMs = float64(time.Since(t0).Microseconds()) / 1e3
	since := d.Snapshots()[0].ChangeID
	var times []float64
	for range runs {
		t := time.Now()
		res.Areas, res.Pages, err = queryAll(s, since)
		if err != nil {
			return res, err
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
	}
	slices.Sort(times)
	res.QueryMs = times[len(times)/2]
	res.RSSMiB, res.HWMMiB = procStatus()
	return res, nil
}

// BenchmarkQueryChangedAreas: an 8 TiB sparse disk, snapshot s1, then one
// 512-byte sector written (or 4 KiB zeroed, see zeroMode) in each of 1% of
// its 64 KiB blocks at random places, snapshot s2; a query pages through s2's changes since s1.
// The setup uses 8 writers and a 64 GiB CBT intent region so the one-time
// setup does not pay an intent fsync per 64 MiB region; the query does
// not depend on the region size.
func BenchmarkQueryChangedAreas(b *testing.B) {
	const size = 8 * tib
	const block = cbt.DefaultGranularity
	div := qcaDiv()
	nblocks := size / block
	nchanged := nblocks / div
	ds, d := benchDisk(b, size, Options{CBT: cbt.Config{RegionSize: 64 << 30}})
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	// Scattered: a random block within each stride of div blocks.
	r := rand.New(rand.NewPCG(9, 9))
	offs := make([]int64, nchanged)
	for i := range offs {
		offs[i] = (int64(i)*div + r.Int64N(div)) * block
	}
	sector := randBuf(Sector, 5)
	// BLOCKWISE_BENCH_QCA_WRITE=zero changes each block with a 4 KiB
	// WRITE_ZEROES (a zero mark in the delta, no data): the 512-byte writes
	// scatter 5 GiB of 4 KiB copy-ups over the file and the setup then
	// waits minutes on random writeback. CBT records both the same way.
	zeroMode := os.Getenv("BLOCKWISE_BENCH_QCA_WRITE") == "zero"
	var wg sync.WaitGroup
	const writers = 8
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(offs); i += writers {
				var err error
				if zeroMode {
					err = d.Zero(offs[i]+int64(i%16)*4096, 4096, true)
				} else {
					_, err = d.WriteAt(sector, offs[i]+int64(i%128)*Sector)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
	if _, err := d.CreateSnapshot("s2", ""); err != nil {
		b.Fatal(err)
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	how := "512-byte writes"
	if zeroMode {
		how = "4 KiB zeroes"
	}
	b.Logf("setup: %d of %d blocks changed (1/%d) with %s in %v", nchanged, nblocks, div, how, time.Since(t0).Round(time.Millisecond))

	b.Run(fmt.Sprintf("8TiB/1of%d", div), func(b *testing.B) {
		// A fresh process opens the disk and queries: its RSS is the cost.
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchQueryChild$", "-test.bench=^$", "-test.count=1")
		cmd.Env = append(os.Environ(), qcaChildEnv+"="+ds.Dir())
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v: %s", err, out)
		}
		var child qcaChildResult
		line := out
		if i := strings.IndexByte(string(out), '{'); i >= 0 {
			line = out[i:]
		}
		if err := json.NewDecoder(strings.NewReader(string(line))).Decode(&child); err != nil {
			b.Fatalf("child output %q: %v", out, err)
		}
		if want := int(nchanged); child.Areas > want || child.Areas < want*9/10 {
			b.Fatalf("query found %d areas, want ≈ %d", child.Areas, want)
		}
		// In-process timing, b.N queries.
		d, err := ds.Open("d")
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		s, err := d.OpenSnapshot("s2")
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		since := d.Snapshots()[0].ChangeID
		runtime.GC()
		debug.FreeOSMemory()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := queryAll(s, since); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/query")
		b.ReportMetric(child.QueryMs, "child-ms/query")
		b.ReportMetric(child.RSSMiB, "child-RSS-MiB")
		b.ReportMetric(child.HWMMiB, "child-HWM-MiB")
		b.ReportMetric(child.OpenMs, "child-open-ms")
		b.ReportMetric(float64(child.Areas), "areas")
		b.ReportMetric(float64(child.Pages), "pages")
	})
}

// --- snapshots -----------------------------------------------------------

// BenchmarkSnapshotCreate: CreateSnapshot on a 1 TiB disk with 64 MiB of
// scattered data and CBT on, while one goroutine keeps issuing 4 KiB
// random writes (a flush every 64) from 10 ms before each snapshot to
// 5 ms after it: a busy disk. Reports the snapshots' mean and p99, and
// the p99 and max of those writes (what the guest waits, a write held by
// the snapshot's exclusive section among them). Each snapshot is deleted
// (untimed) so the chain stays at two layers. "nocbt" is the same without
// CBT: its writes after a snapshot need no intent sync (invariant 1), so
// their max is what the snapshot itself holds them.
func BenchmarkSnapshotCreate(b *testing.B) {
	for _, mode := range []string{"cbt", "nocbt"} {
		b.Run(mode, func(b *testing.B) {
			_, d := benchDisk(b, tib, Options{DisableCBT: mode == "nocbt"})
			snapshotBusy(b, d)
		})
	}
}

func snapshotBusy(b *testing.B, d *Disk) {
	p := randBuf(1<<20, 3)
	r := rand.New(rand.NewPCG(1, 1))
	for range 64 {
		if _, err := d.WriteAt(p, r.Int64N(tib/mib)*mib); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
	var times, writes []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stop, done := make(chan struct{}), make(chan struct{})
		var ws []time.Duration
		var werr error
		go func() { ws, werr = latencyWriter(d, gib, stop); close(done) }()
		time.Sleep(10 * time.Millisecond)
		t := time.Now()
		if _, err := d.CreateSnapshot(fmt.Sprintf("s%d", i), ""); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t))
		time.Sleep(5 * time.Millisecond)
		close(stop)
		<-done
		if werr != nil {
			b.Fatal(werr)
		}
		writes = append(writes, ws...)
		b.StopTimer()
		task, err := d.DeleteSnapshot(fmt.Sprintf("s%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if err := task.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(times)
	slices.Sort(writes)
	var sum time.Duration
	for _, t := range times {
		sum += t
	}
	b.ReportMetric(float64(sum.Microseconds())/1e3/float64(len(times)), "ms/snapshot")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1e3, "p99-ms")
	b.ReportMetric(pct(writes, 0.99), "write-p99-us")
	b.ReportMetric(float64(writes[len(writes)-1].Microseconds()), "write-max-us")
}

// percentile of sorted durations, in microseconds.
func pct(ts []time.Duration, p float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	return float64(ts[min(len(ts)-1, int(float64(len(ts))*p))].Microseconds())
}

// latencyWriter issues 4 KiB random writes (a flush every 64) until stop
// and returns their latencies, sorted.
func latencyWriter(d *Disk, size int64, stop <-chan struct{}) ([]time.Duration, error) {
	p := randBuf(4096, 11)
	r := rand.New(rand.NewPCG(5, 5))
	var ts []time.Duration
	for i := 0; ; i++ {
		select {
		case <-stop:
			slices.Sort(ts)
			return ts, nil
		default:
		}
		t := time.Now()
		if _, err := d.WriteAt(p, r.Int64N(size/4096)*4096); err != nil {
			return nil, err
		}
		ts = append(ts, time.Since(t))
		if i%64 == 63 {
			if err := d.Flush(); err != nil {
				return nil, err
			}
		}
	}
}

// BenchmarkConsolidate: a 1 GiB disk with 1 GiB of data below a delta that
// holds 256 MiB (1 MiB writes at random places); deleting the snapshot
// merges the delta while one goroutine keeps issuing 4 KiB random writes.
// Reports MB/s merged and the writes' p50/p99/max latency during the merge,
// next to the same writer's p99 for an equal time just before it.
func BenchmarkConsolidate(b *testing.B) {
	const size = gib
	const deltaData = 256 * mib
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, d := benchDisk(b, size, Options{})
		fill(b, d, size, 1)
		if _, err := d.CreateSnapshot("s", ""); err != nil {
			b.Fatal(err)
		}
		p := randBuf(1<<20, 4)
		r := rand.New(rand.NewPCG(2, 2))
		for _, blk := range r.Perm(int(size / mib))[:deltaData/mib] {
			if _, err := d.WriteAt(p, int64(blk)*mib); err != nil {
				b.Fatal(err)
			}
		}
		if err := d.Flush(); err != nil {
			b.Fatal(err)
		}
		merged := d.chain[len(d.chain)-1].held() * uint64(d.grain)

		// Baseline: the same writer without a merge, for 300 ms.
		stop := make(chan struct{})
		time.AfterFunc(300*time.Millisecond, func() { close(stop) })
		base, err := latencyWriter(d, size, stop)
		if err != nil {
			b.Fatal(err)
		}

		// What the end still has to give back: the child's allocated bytes
		// when its drop is durable, and the time from there to the task's
		// end (its truncation, on a file system that may discard).
		child := d.chain[len(d.chain)-1]
		var endAt time.Time
		var endBytes int64
		d.afterMergeStep = func(step int) {
			if step == 3 {
				endAt, endBytes = time.Now(), fileAllocated(b, child.f)
			}
		}
		b.StartTimer()
		stop = make(chan struct{})
		var during []time.Duration
		var werr error
		done := make(chan struct{})
		go func() { during, werr = latencyWriter(d, size, stop); close(done) }()
		t0, mono0 := time.Now(), monotonic()
		task, err := d.DeleteSnapshot("s")
		if err != nil {
			b.Fatal(err)
		}
		if err := task.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		// With -test.v: the merge's window on CLOCK_MONOTONIC, to cut it
		// out of a `perf record -k CLOCK_MONOTONIC` of the run.
		b.Logf("merge window %.6f %.6f", mono0, monotonic())
		b.ReportMetric(float64(endBytes)/float64(mib), "end-MiB")
		b.ReportMetric(float64(time.Since(endAt).Milliseconds()), "end-ms")
		close(stop)
		<-done
		b.StopTimer()
		if werr != nil {
			b.Fatal(werr)
		}
		b.ReportMetric(float64(merged)/1e6/el.Seconds(), "MB/s-merged")
		b.ReportMetric(pct(during, 0.5), "p50-us")
		b.ReportMetric(pct(during, 0.99), "p99-us")
		b.ReportMetric(float64(during[len(during)-1].Microseconds()), "max-us")
		b.ReportMetric(pct(base, 0.99), "idle-p99-us")
		b.ReportMetric(float64(len(during)), "writes")
	}
}

// --- grain -----------------------------------------------------------------

// BenchmarkDeltaGrain compares delta grains: 4 KiB random writes into a
// fresh delta over 1 GiB of data (a partial grain is copied up from
// below), and 1 MiB sequential reads of the whole disk through a 3-layer
// chain (flat + two deltas each holding 25% of the disk in 64 KiB runs)
// next to the flat disk alone.
func BenchmarkDeltaGrain(b *testing.B) {
	const size = gib
	for _, grain := range []int64{4096, 65536} {
		b.Run(fmt.Sprintf("grain=%d", grain), func(b *testing.B) {
			_, d := benchDisk(b, size, Options{Grain: grain})
			fill(b, d, size, 1)
			b.Run("write4k-fresh-delta", func(b *testing.B) {
				name := fmt.Sprintf("w%d", b.N)
				if _, err := d.CreateSnapshot(name, ""); err != nil {
					b.Fatal(err)
				}
				writeLoop(b, d, size, 4096, true)
				top := d.chain[len(d.chain)-1]
				b.ReportMetric(float64(top.held()*uint64(grain))/float64(b.N*4096), "amplification")
				task, err := d.DeleteSnapshot(name)
				if err != nil {
					b.Fatal(err)
				}
				if err := task.Wait(context.Background()); err != nil {
					b.Fatal(err)
				}
			})
			for _, layers := range []int{1, 3} {
				b.Run(fmt.Sprintf("seqread-%dlayer", layers), func(b *testing.B) {
					for len(d.chain) < layers {
						if _, err := d.CreateSnapshot(fmt.Sprintf("r%d", len(d.chain)), ""); err != nil {
							b.Fatal(err)
						}
						p := randBuf(64<<10, uint64(len(d.chain)))
						r := rand.New(rand.NewPCG(uint64(len(d.chain)), 7))
						nb := size / (64 << 10)
						for _, blk := range r.Perm(int(nb))[:nb/4] {
							if _, err := d.WriteAt(p, int64(blk)*(64<<10)); err != nil {
								b.Fatal(err)
							}
						}
						if err := d.Flush(); err != nil {
							b.Fatal(err)
						}
					}
					buf := make([]byte, mib)
					b.SetBytes(mib)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if _, err := d.ReadAt(buf, int64(i)%(size/mib)*mib); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkWriteConcurrent: 8 writers of random 4 KiB writes on a flat
// 1 GiB disk, as a guest with a deep queue issues them; CBT intents that
// need a journal append or sync share it (group commit).
func BenchmarkWriteConcurrent(b *testing.B) {
	for _, mode := range []string{"cbt", "nocbt"} {
		b.Run("rand4k-8w/"+mode, func(b *testing.B) {
			const size, writers = 1 << 30, 8
			_, d := benchDisk(b, size, Options{DisableCBT: mode == "nocbt"})
			b.SetBytes(4096)
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := randBuf(4096, uint64(w))
					r := rand.New(rand.NewPCG(uint64(w), 3))
					for i := w; i < b.N; i += writers {
						if _, err := d.WriteAt(p, r.Int64N(size/4096)*4096); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := d.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// fileAllocated is a file's allocated bytes (st_blocks).
func fileAllocated(tb testing.TB, f vfs.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// monotonic is CLOCK_MONOTONIC in seconds, the clock perf can stamp with.
func monotonic() float64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}
