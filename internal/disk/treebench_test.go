package disk

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// treeDiv is the fraction of a 1 TiB disk's 64 KiB blocks changed before
// the timed snapshot, as 1/treeDiv (BLOCKWISE_BENCH_TREE_DIV, default 100).
func treeDiv() int64 {
	if v, err := strconv.ParseInt(os.Getenv("BLOCKWISE_BENCH_TREE_DIV"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 100
}

// treeBenchDisk is a disk of a datastore with hash trees on or off.
func treeBenchDisk(b *testing.B, size int64, trees bool) *Disk {
	ds, err := OpenDatastore(b.TempDir(), WithHashTrees(trees))
	if err != nil {
		b.Fatal(err)
	}
	d, err := ds.Create("d", size, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkHashTree measures what the snapshot hash trees cost:
//   - write/rand4k/{tree,notree}: 4 KiB random writes (a flush every 64)
//     on a 1 GiB disk that takes a snapshot every 8192 writes and deletes
//     the one before (a backup cycle), so the background hashing runs
//     beside the writes.
//   - snapshot1TiB/{tree,notree}: a 1 TiB disk, 1/treeDiv of its 64 KiB
//     blocks changed (4 KiB of random data each) since the last
//     snapshot: CreateSnapshot's latency, and how long until the new
//     snapshot's root is ready (tree only).
func BenchmarkHashTree(b *testing.B) {
	for _, mode := range []string{"tree", "notree"} {
		b.Run("write/rand4k/"+mode, func(b *testing.B) { benchTreeWrites(b, mode == "tree") })
	}
	for _, mode := range []string{"tree", "notree"} {
		b.Run("snapshot1TiB/"+mode, func(b *testing.B) { benchTreeSnapshot(b, mode == "tree") })
	}
}

func benchTreeWrites(b *testing.B, trees bool) {
	const size = 1 << 30
	d := treeBenchDisk(b, size, trees)
	p := randBuf(4096, 7)
	r := rand.New(rand.NewPCG(3, 3))
	var task *Task
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := d.WriteAt(p, r.Int64N(size/4096)*4096); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := d.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		if i%8192 == 0 {
			task = benchCycle(b, d, i/8192, task)
		}
	}
	if err := d.Flush(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*4096/1e6/el.Seconds(), "MB/s")
}

// benchCycle waits for the previous consolidation, snapshots, and
// deletes the snapshot before (its merge runs in the background).
func benchCycle(b *testing.B, d *Disk, n int, prev *Task) *Task {
	if prev != nil {
		if err := prev.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := d.CreateSnapshot(fmt.Sprintf("c%d", n), ""); err != nil {
		b.Fatal(err)
	}
	if n == 0 {
		return nil
	}
	t, err := d.DeleteSnapshot(fmt.Sprintf("c%d", n-1))
	if err != nil {
		b.Fatal(err)
	}
	return t
}

func benchTreeSnapshot(b *testing.B, trees bool) {
	d := treeBenchDisk(b, tib, trees)
	if _, err := d.CreateSnapshot("s0", ""); err != nil {
		b.Fatal(err)
	}
	blocks := scatter(b, d, tib/(64<<10)/treeDiv())
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse
	b.ResetTimer()
	t0 := time.Now()
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		b.Fatal(err)
	}
	create := time.Since(t0)
	b.ReportMetric(float64(create.Microseconds())/1e3, "ms/snapshot")
	b.ReportMetric(float64(blocks), "blocks")
	if !trees {
		return
	}
	if _, _, err := d.SnapshotTree(context.Background(), "s1"); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(t0).Seconds(), "s-to-root")
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(int64(ms.HeapInuse)-int64(heap0))/(1<<20), "tree-heap-MiB")
	if fi, err := os.Stat(filepath.Join(d.Path(), treeDirName, "s1.tree")); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "tree-file-MiB")
	}
}

// scatter writes 4 KiB of random data into n random 64 KiB blocks (8
// writers) and flushes; it returns n.
func scatter(b *testing.B, d *Disk, n int64) int64 {
	var wg sync.WaitGroup
	const writers = 8
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := randBuf(4096, uint64(w)+20)
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := int64(w); i < n; i += writers {
				if _, err := d.WriteAt(p, r.Int64N(tib/(64<<10))*(64<<10)); err != nil {
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
	return n
}
