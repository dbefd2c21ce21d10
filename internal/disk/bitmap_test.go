package disk

import (
	"bytes"
	"context"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

func TestNextAbsent(t *testing.T) {
	bm := roaring.New()
	bm.AddRange(25600, 25616)
	bm.AddRange(131072, 131328)
	bm.AddRange(1<<31, 1<<31+100000)
	for _, opt := range []bool{false, true} {
		if opt {
			bm.RunOptimize()
		}
		for _, c := range []struct{ x, want uint32 }{{0, 0}, {25600, 25616}, {25615, 25616}, {131072, 131328}, {131100, 131328}, {1 << 31, 1<<31 + 100000}, {1<<31 + 5, 1<<31 + 100000}} {
			if got := nextAbsent(bm, c.x); got != int64(c.want) {
				t.Errorf("nextAbsent(%d) = %d, want %d", c.x, got, c.want)
			}
		}
	}
}

// Grains past the first roaring container (index ≥ 65536) exercise the
// bitmap paths small model disks never reach.
func TestGrainsPastFirstContainer(t *testing.T) {
	_, d := newDisk(t, 1<<30, Options{})
	at := func(g int64) int64 { return g * DefaultGrain }
	d.WriteAt(bytes.Repeat([]byte{1}, 1<<20), at(65536)-512<<10) // spans the boundary
	d.CreateSnapshot("s1", "")
	d.WriteAt(bytes.Repeat([]byte{2}, 8192), at(131072))
	d.Zero(at(65536), 64<<10, true)
	d.CreateSnapshot("s2", "")
	d.WriteAt(bytes.Repeat([]byte{3}, 4096), at(200000))
	want := map[int64]byte{at(65536) - 4096: 1, at(65536): 0, at(65536) + 64<<10: 1, at(131072): 2, at(200000): 3, at(200001): 0}
	check := func(stage string) {
		for off, b := range want {
			p := make([]byte, 512)
			d.ReadAt(p, off)
			if p[0] != b || p[511] != b {
				t.Fatalf("%s: byte at %d is %d, want %d", stage, off, p[0], b)
			}
		}
	}
	check("before merge")
	ext, err := d.Extents(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range ext {
		if !e.Zero {
			data += e.Len
		}
	}
	if data != 1<<20-64<<10+8192+4096 {
		t.Fatalf("allocated %d bytes: %+v", data, ext)
	}
	task, _ := d.DeleteSnapshot("s1")
	task.Wait(context.Background())
	task, _ = d.DeleteSnapshot("s2")
	task.Wait(context.Background())
	check("after merging both snapshots")
}
