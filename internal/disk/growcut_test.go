package disk

import (
	"bytes"
	"fmt"
	"testing"
)

// TestPowerCutGrowSteps cuts the power at each file-system call of Grow in
// turn (with two tears of what was not synced, so the commit, the rename
// of disk.meta, is kept by one and lost by the other where it is in
// flight), then runs the power-cut model's settling on it twice:
//
//  1. after the cut inside Grow the disk opens at the old or the new size
//     and at that same size on every later open (invariant 7);
//  2. the next cut's work first acknowledges an operation that had
//     nothing to do (the bare "A" of a deletion without snapshots), then
//     writes the last sector of whatever size the disk opened at, flushes
//     it and is cut inside a later write: the disk keeps its size and the
//     flushed write past the old end (P1).
//
// This is the "Open finding" of docs/format.md P5 that was: the model took
// that bare "A" for the acknowledgement of the grow the previous cut had
// interrupted, and expected the new size of a grow that never landed,
// which read as a disk that changed its size between two opens.
func TestPowerCutGrowSteps(t *testing.T) {
	sizes := map[bool]int{} // cuts after which the disk had grown, had not
	for step := 0; ; step++ {
		done := false
		for _, tear := range []int64{1, 2} {
			t.Run(fmt.Sprintf("step%d/tear%d", step, tear), func(t *testing.T) {
				end, grew := growCutAt(t, step, tear)
				done = done || end
				if !end {
					sizes[grew]++
				}
			})
		}
		if t.Failed() {
			return
		}
		if done {
			break
		}
		if step > 200 {
			t.Fatal("Grow never completed")
		}
	}
	// Both outcomes of a cut in Grow were checked: the commit kept (at its
	// rename and after it) and lost (before it, or its rename torn away).
	if sizes[true] == 0 || sizes[false] == 0 {
		t.Fatalf("cuts that kept the grow: %d, that lost it: %d", sizes[true], sizes[false])
	}
	t.Logf("cuts that kept the grow: %d, that lost it: %d", sizes[true], sizes[false])
}

// growCutAt runs the two cuts of TestPowerCutGrowSteps with the first
// one at Grow's step-th file-system call; it reports whether Grow
// completed before that call (no step left to cut), and else whether the
// disk came back grown.
func growCutAt(t *testing.T, step int, tear int64) (done, grew bool) {
	r := newPowerRun(t, 3) // a 64 KiB disk with a snapshot, "base"
	d := r.openLive(0)
	old := d.Size()
	grown := old + 48<<10
	r.fsys.CutAfter(step, tear)
	err := d.Grow(grown)
	if r.fsys.Crashed() == nil {
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		return true, false
	}
	r.settle(0, d, err, fmt.Sprintf("B G %d %d\n", old, grown))
	size := int64(len(r.c.flushed))
	if got := r.diskSize(0); got != size || size != old && size != grown {
		t.Fatalf("after the cut in Grow: the disk opens at %d, the model follows %d (old %d, new %d)", got, size, old, grown)
	}

	d = r.openLive(1)
	var out bytes.Buffer
	out.WriteString("A\n") // an operation that found nothing to do
	off, seed := size-Sector, int64(step)<<8|tear
	fmt.Fprintf(&out, "B W %d %d %d\n", off, Sector, seed)
	if _, err := d.WriteAt(payload(seed, Sector), off); err != nil {
		t.Fatal(err)
	}
	out.WriteString("A\nB F\n")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	out.WriteString("A\n")
	fmt.Fprintf(&out, "B W 0 %d %d\n", Sector, seed+1)
	r.fsys.CutAfter(0, tear)
	_, err = d.WriteAt(payload(seed+1, Sector), 0)
	r.settle(1, d, err, out.String())
	if got := r.diskSize(1); got != size {
		t.Fatalf("the disk opened at %d after the cut in Grow, at %d after the next cut", size, got)
	}
	return false, size == grown
}
