package disk

import (
	"testing"
)

// TestTreeReadsHeldBytesOnly: a snapshot's tree reads a changed block
// only where a layer holds data (T2), and every root still equals a
// full build. Each case changes blocks after s0 (whose tree, T3, reads
// the flat bottom's data) and states the bytes s1's tree must read.
func TestTreeReadsHeldBytesOnly(t *testing.T) {
	_, probe := newDisk(t, 1<<20, Options{})
	bs := int64(probe.trees.gran)
	size := 16*bs + bs/2 // a short last block
	cases := []struct {
		name     string
		change   func(d *Disk) error
		wantRead int64
	}{
		{"half data half hole", func(d *Disk) error { return treeWrite(d, bs/2, 9*bs) }, bs / 2},
		{"layer grain over data parent", func(d *Disk) error { return treeWrite(d, 4096, 2*bs) }, bs},
		{"punched over data parent", func(d *Disk) error { return d.Zero(3*bs, bs, true) }, 0},
		{"punched over a hole", func(d *Disk) error { return d.Zero(11*bs, bs, true) }, 0},
		{"zeroes written over data parent", func(d *Disk) error { return d.Zero(4*bs, bs, false) }, bs},
		{"adjacent blocks one span", func(d *Disk) error { return treeWrite(d, 3*bs, 5*bs+bs/2) }, 3*bs + bs/2},
		{"short last block", func(d *Disk) error { return treeWrite(d, 4096, 16*bs) }, 4096},
		{"zeroes written over a hole", func(d *Disk) error { return treeWrite0(d, bs, 12*bs) }, bs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, d := newDisk(t, size, Options{})
			if err := treeWrite(d, 8*bs, 0); err != nil { // blocks 0–7 on the flat bottom
				t.Fatal(err)
			}
			before := d.trees.read.Load()
			if _, err := d.CreateSnapshot("s0", ""); err != nil {
				t.Fatal(err)
			}
			checkTreeRoot(t, d, "s0")
			if got := d.trees.read.Load() - before; got != 8*bs {
				t.Errorf("s0: read %d bytes, want %d", got, 8*bs)
			}
			if err := c.change(d); err != nil {
				t.Fatal(err)
			}
			before = d.trees.read.Load()
			if _, err := d.CreateSnapshot("s1", ""); err != nil {
				t.Fatal(err)
			}
			checkTreeRoot(t, d, "s1")
			if got := d.trees.read.Load() - before; got != c.wantRead {
				t.Errorf("s1: read %d bytes, want %d", got, c.wantRead)
			}
		})
	}
}

func treeWrite(d *Disk, n, off int64) error {
	_, err := d.WriteAt(randBuf(int(n), uint64(off)+1), off)
	return err
}

func treeWrite0(d *Disk, n, off int64) error {
	_, err := d.WriteAt(make([]byte, n), off)
	return err
}
