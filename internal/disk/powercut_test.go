package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// powerCBT is the CBT of the power-cut disks: small regions, so that the
// over-reporting a cut allows (format.md invariant 1) is checked tightly.
var powerCBT = cbt.Config{Granularity: 8 << 10, RegionSize: 32 << 10}

// powerSeeds is the fixed seed list of the default mode: each seed is a
// run of cuts on its own small disk. BLOCKWISE_LONG adds random seeds.
var powerSeeds = []int64{1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233}

// powerRun is one seed's disk, model and clones across its cuts.
type powerRun struct {
	t      *testing.T
	rng    *rand.Rand
	fsys   *vfstest.CrashFS
	ds     *Datastore
	c      *crashModel
	size   int64
	clones map[string][]byte // acknowledged clones and the image they read
	nclone int
	// lastBegun is the operation announced and not yet acknowledged in
	// this cut's work, pending the one in flight at the cut.
	lastBegun, pending string
	// live names the clones as the loop made and deleted them.
	live map[string]bool
	// at counts the operations the cuts landed in ("W", "S", "C", ...;
	// "-" between operations).
	at map[string]int
}

// TestPowerCutModel runs random engine operations (writes, write-zeroes,
// trims, flushes, snapshots, snapshot deletion with its consolidation,
// linked and full clones, grow, reclaim) on a vfstest.CrashFS and cuts the
// power inside them, at a counted file-system call, with a torn cut
// (CrashFS.Cut: unsynced pages and directory changes each survive or
// not). After each cut the datastore is reopened under a new boot ID and
// verifyAfterCrash and verifyAfterCut check format.md's power-cut
// invariants P1-P5. The
// seeds are fixed in the default mode; BLOCKWISE_LONG=1 adds random ones
// (memory stays bounded: at most crashMaxSnaps snapshot images and three
// clone images per run).
func TestPowerCutModel(t *testing.T) {
	seeds, cuts := powerSeeds, 25
	if seed, err := strconv.ParseInt(os.Getenv(powerCutsEnv+"_SEED"), 10, 64); err == nil {
		seeds = []int64{seed} // reproduce a soak's failure: its subtest's name
	} else if n, _ := strconv.Atoi(os.Getenv(powerCutsEnv)); n > 0 {
		seeds = randomSeeds((n + cuts - 1) / cuts) // scripts/soak.sh
	} else if long {
		cuts = 100
		seeds = append(seeds, randomSeeds(40)...)
	}
	total, at := 0, map[string]int{}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			total += runPowerCuts(t, seed, cuts, at)
		})
	}
	// W write, Z zeroes or trim, F flush, S snapshot, D deletion, C clone,
	// X clone deletion, R reclaim, - between operations.
	t.Logf("%d simulated power cuts, landed in %v", total, at)
	if os.Getenv(powerCutsEnv) != "" {
		fmt.Printf("cuts: engine %d\n", total)
	}
}

// powerCutsEnv asks TestPowerCutModel for about N cuts on random seeds
// (scripts/soak.sh) instead of the fixed list.
const powerCutsEnv = "BLOCKWISE_POWER_CUTS"

func randomSeeds(n int) []int64 {
	base := time.Now().UnixNano()
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = base + int64(i)
	}
	return seeds
}

// runPowerCuts makes a disk and cuts the power n times under random work,
// and counts the operations the cuts landed in into at.
func runPowerCuts(t *testing.T, seed int64, n int, at map[string]int) int {
	r := newPowerRun(t, seed)
	for i := range n {
		r.cutOnce(i)
	}
	for k, v := range r.at {
		at[k] += v
	}
	return n
}

func newPowerRun(t *testing.T, seed int64) *powerRun {
	rng := rand.New(rand.NewSource(seed))
	size := int64(rng.Intn(8)+1) * 64 << 10 // 64 KiB .. 512 KiB
	fsys := vfstest.NewCrashFS()
	ds, err := OpenDatastore("/ds", WithFS(fsys), WithBootID(fsys.BootID()))
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", size, Options{Grain: []int64{512, 4096}[rng.Intn(2)], CBT: powerCBT})
	if err != nil {
		t.Fatal(err)
	}
	first, err := d.CreateSnapshot("base", "")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	c := &crashModel{flushed: make([]byte, size), sinceID: first.ChangeID, cfg: powerCBT,
		snaps: map[string][]byte{"base": make([]byte, size)}, gone: map[string]bool{}, coarse: true}
	return &powerRun{t: t, rng: rng, fsys: fsys, ds: ds, c: c, size: size, clones: map[string][]byte{}, at: map[string]int{}}
}

// cutOnce opens the disk, arms a cut a random number of file-system calls
// ahead, works until it lands, reboots and verifies.
func (r *powerRun) cutOnce(i int) {
	d := r.openLive(i)
	r.fsys.CutAfter(r.rng.Intn(400), r.rng.Int63())
	var out bytes.Buffer
	err := r.loop(d, r.rng.Int63(), &out)
	r.settle(i, d, err, out.String())
}

// openLive opens disk "c" for cut i's work.
func (r *powerRun) openLive(i int) *Disk {
	d, err := r.ds.Open("c")
	if err != nil {
		r.t.Fatalf("cut %d: open: %v", i, err)
	}
	r.live = map[string]bool{}
	for name := range r.clones {
		r.live[name] = true
	}
	return d
}

// settle takes cut i, which stopped the work on d with err, reboots,
// follows the work's announcements (out) in the model and verifies.
func (r *powerRun) settle(i int, d *Disk, err error, out string) {
	t := r.t
	if r.fsys.Crashed() == nil {
		t.Fatalf("cut %d: the work stopped with %v, not the cut\n%s", i, err, out)
	}
	if os.Getenv("BLOCKWISE_POWER_TRACE") != "" {
		t.Logf("cut %d:\n%s", i, out)
	}
	d.Close() // stops a consolidation; fails like the rest
	r.fsys = r.fsys.Crashed()
	if r.ds, err = OpenDatastore("/ds", WithFS(r.fsys), WithBootID(r.fsys.BootID())); err != nil {
		t.Fatalf("cut %d: datastore after the cut: %v", i, err)
	}
	r.c.iter = i
	cur := bytes.Clone(r.c.flushed)
	r.lastBegun = "" // the previous cut's pending operation is settled
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l != "" {
			r.c.apply(l, &cur)
			r.applyBegun(l, &cur)
		}
	}
	r.pending = r.c.pending
	// P6 (docs/format.md): one size, the old or the new one of a grow in
	// flight, the same at every open.
	size := r.diskSize(i)
	if again := r.diskSize(i); again != size {
		t.Fatalf("cut %d: the disk opened at %d bytes, then at %d (pending %q, model %d)", i, size, again, r.pending, len(cur))
	}
	if strings.HasPrefix(r.pending, "B G ") && size != int64(len(cur)) {
		r.grow(r.pending, &cur) // the grow landed
	}
	if size != int64(len(cur)) {
		t.Fatalf("cut %d: the disk opened at %d bytes, the model expects %d (pending %q)", i, size, len(cur), r.pending)
	}
	if f := strings.Fields(r.pending); len(f) > 1 {
		r.at[f[1]]++
	} else {
		r.at["-"]++
	}
	r.c.verifyAfterCrash(t, r.ds, i)
	r.verifyClones(i)
}

// loop is crashLoop's work plus trims, clones, grows and reclaims, on a
// disk of any size, until an operation fails; it reports to out as crashLoop does.
func (r *powerRun) loop(d *Disk, seed int64, out io.Writer) error {
	rng := rand.New(rand.NewSource(seed))
	say := func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }
	for i := int64(0); ; i++ {
		size := d.Size()
		off := rng.Int63n(size/Sector) * Sector
		n := min(size-off, (rng.Int63n(64)+1)*Sector)
		var err error
		switch op := rng.Intn(100); {
		case op < 55:
			say("B W %d %d %d", off, n, seed*1e6+i)
			_, err = d.WriteAt(payload(seed*1e6+i, n), off)
		case op < 63:
			say("B Z %d %d", off, n)                             // the model reads zeroes either way
			err = d.WriteZeroes(off, n, rng.Intn(2) == 0, false) // fast needs fallocate
		case op < 68:
			say("B Z %d %d", off, n)
			err = d.Trim(off, n)
		case op < 78:
			say("B F")
			err = d.Flush()
		case op < 85 && len(d.Snapshots()) < crashMaxSnaps:
			err = r.snapshot(d, say)
		case op < 92:
			err = r.deleteSnapshot(d, rng, say)
		case op < 95:
			err = r.clone(d, rng, say)
		case op < 97 && size < 2*r.size:
			grown := size + (rng.Int63n(16)+1)*4096
			say("B G %d %d", size, grown)
			err = d.Grow(grown)
		default:
			say("B R")
			err = reclaimWait(d)
		}
		if errors.Is(err, ErrBusy) {
			say("A BUSY")
			continue
		}
		if err != nil {
			return err
		}
		say("A")
	}
}

func (r *powerRun) snapshot(d *Disk, say func(string, ...any)) error {
	say("B S")
	info, err := d.CreateSnapshot("", "")
	if err == nil {
		say("I %s %s", info.ID, info.ChangeID)
	}
	return err
}

func (r *powerRun) deleteSnapshot(d *Disk, rng *rand.Rand, say func(string, ...any)) error {
	snaps := d.Snapshots()
	if len(snaps) == 0 {
		return nil
	}
	id := snaps[rng.Intn(len(snaps))].ID
	say("B D %s", id)
	_, err := d.DeleteSnapshot(id)
	return err
}

// clone clones a snapshot (linked or full) and closes the clone: after a
// cut it must read the snapshot's image if it exists, and exist once
// acknowledged. Past three clones it deletes one instead.
func (r *powerRun) clone(d *Disk, rng *rand.Rand, say func(string, ...any)) error {
	if names := slices.Sorted(maps.Keys(r.live)); len(names) >= 3 || len(names) > 0 && rng.Intn(3) == 0 {
		say("B X %s", names[0])
		err := r.ds.Delete(names[0])
		if err == nil {
			delete(r.live, names[0])
		}
		return err
	}
	snaps := d.Snapshots()
	if len(snaps) == 0 {
		return nil
	}
	snap := snaps[rng.Intn(len(snaps))].ID
	r.nclone++
	name := fmt.Sprintf("k%d", r.nclone)
	linked := rng.Intn(2) == 0
	say("B C %s %s %v", name, snap, linked)
	c, _, err := r.ds.Clone(d, snap, name, linked)
	if err != nil {
		return err
	}
	r.live[name] = true
	return c.Close()
}

func reclaimWait(d *Disk) error {
	task, err := d.Reclaim(0)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return task.Wait(ctx)
}

// applyBegun follows the clones and grows in the announcements: an
// acknowledgement ("A") settles the operation begun last, and only that
// one. The pending one (begun, not acknowledged) is settled after the cut
// (verifyClones, and the size check in cutOnce).
//
// An operation that finds nothing to do (a deletion without snapshots)
// acknowledges without announcing: its "A" must not settle an older
// announcement again, least of all one whose operation the previous cut
// interrupted (a grow it cut would be counted as landed).
func (r *powerRun) applyBegun(line string, cur *[]byte) {
	if strings.HasPrefix(line, "B ") {
		r.lastBegun = line
	}
	if !strings.HasPrefix(line, "A") {
		return
	}
	begun := r.lastBegun
	r.lastBegun = ""
	if line != "A" {
		return // "A BUSY": refused, nothing changed
	}
	f := strings.Fields(begun)
	switch {
	case len(f) == 5 && f[1] == "C":
		r.clones[f[2]] = r.c.snaps[f[3]]
	case len(f) == 3 && f[1] == "X":
		delete(r.clones, f[2])
	case len(f) == 4 && f[1] == "G":
		r.grow(begun, cur)
	}
}

// verifyClones: every acknowledged clone opens, passes Check and reads
// its snapshot's image; the clone in flight at the cut exists whole (the
// same) or not at all; an acknowledged deletion stays done.
func (r *powerRun) verifyClones(i int) {
	t := r.t
	f := strings.Fields(r.pending)
	if len(f) == 5 && f[1] == "C" {
		if c, err := r.ds.Open(f[2]); err == nil {
			c.Close()
			r.clones[f[2]] = r.c.snaps[f[3]]
		}
		// else gone with the cut: fine, it was never acknowledged
	}
	for name, want := range r.clones {
		c, err := r.ds.Open(name)
		if len(f) == 3 && f[1] == "X" && f[2] == name && err != nil {
			delete(r.clones, name) // its deletion landed
			continue
		}
		if err != nil {
			t.Fatalf("cut %d: acknowledged clone %s: %v", i, name, err)
		}
		if err := c.Check(); err != nil {
			t.Fatalf("cut %d: clone %s: %v", i, name, err)
		}
		got := make([]byte, len(want))
		c.ReadAt(got, 0)
		c.Close()
		if j := firstDiff(got, want); j >= 0 {
			t.Fatalf("cut %d: clone %s differs from its snapshot at %d (pending %q, clones %v)", i, name, j, r.pending, slices.Sorted(maps.Keys(r.clones)))
		}
	}
}

// verifyAfterCut is called by verifyAfterCrash on the reopened disk after
// every SIGKILL and every power cut, once the data, the snapshots and
// Check passed: it checks that CBT reports, since every surviving
// snapshot's change ID, every block that differs from now (or refuses the
// ID with cbt.ErrChangeIDInvalid), format.md invariant P3.
//
// Hook: the check that the hash tree matches the data (format.md P5,
// issue 20 item 1) goes here too, on d as reopened after the cut.
func verifyAfterCut(t *testing.T, d *Disk, iter int, snaps map[string][]byte, now []byte) {
	t.Helper()
	if task := d.Consolidation(); task != nil {
		<-task.Done()
	}
	info, err := d.CreateSnapshot(fmt.Sprintf("cut-%d", iter), "")
	if err != nil {
		t.Fatalf("iteration %d: snapshot after the cut: %v", iter, err)
	}
	defer func() {
		if _, err := d.DeleteSnapshot(info.ID); err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		<-d.Consolidation().Done()
	}()
	s, err := d.OpenSnapshot(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	verifyTreesAfterCut(t, d, iter, snaps, info.ID, now)
	g := d.tracker.Config().Granularity
	for _, old := range d.Snapshots() {
		img, ok := snaps[old.ID]
		if !ok || old.ID == info.ID {
			continue
		}
		ca, err := s.ChangedAreas(0, old.ChangeID)
		if errors.Is(err, cbt.ErrChangeIDInvalid) {
			continue
		}
		if err != nil {
			t.Fatalf("iteration %d: changes since %s: %v", iter, old.ID, err)
		}
		got := areaSet(ca, g)
		for o := int64(0); o < int64(len(now)); o += g {
			e := min(o+g, int64(len(now)))
			if !bytes.Equal(padded(img, o, e), now[o:e]) && !got[o] {
				t.Fatalf("iteration %d: CBT since %s misses the changed block at %d", iter, old.ID, o)
			}
		}
	}
}

// grow applies an acknowledged (or landed) "B G old new": the model
// grows with zeroes, and CBT must report the new area as changed, as if
// zeroes were written there (format.md invariant 7).
func (r *powerRun) grow(begun string, cur *[]byte) {
	f := strings.Fields(begun)
	if len(f) != 4 || f[1] != "G" {
		return
	}
	old, _ := strconv.ParseInt(f[2], 10, 64)
	n, _ := strconv.ParseInt(f[3], 10, 64)
	if int64(len(*cur)) != old {
		return // applied already
	}
	zero := make([]byte, n-old)
	*cur = append(*cur, zero...)
	r.c.flushed = append(r.c.flushed, zero...)
	r.c.cbtW = append(r.c.cbtW, crashWrite{off: old, data: zero, iter: r.c.iter})
}

// diskSize is the size disk "c" opens with after cut i.
func (r *powerRun) diskSize(i int) int64 {
	d, err := r.ds.Open("c")
	if err != nil {
		r.t.Fatalf("cut %d: reopen: %v", i, err)
	}
	defer d.Close()
	return d.Size()
}

// padded is b[o:e], zeroes past b's end (an image from before a grow).
func padded(b []byte, o, e int64) []byte {
	if e <= int64(len(b)) {
		return b[o:e]
	}
	p := make([]byte, e-o)
	if o < int64(len(b)) {
		copy(p, b[o:])
	}
	return p
}

// verifyTreesAfterCut checks that every surviving snapshot's hash tree
// (rebuilt or reloaded after the cut, format.md T4) has the root of a
// full build over the snapshot's image, and so does the tree of the
// snapshot taken after the cut over the disk's image now.
func verifyTreesAfterCut(t *testing.T, d *Disk, iter int, snaps map[string][]byte, cutID string, now []byte) {
	t.Helper()
	if d.trees == nil {
		return // hash trees off, or no CBT
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, si := range d.Snapshots() {
		img, ok := snaps[si.ID]
		if si.ID == cutID {
			img, ok = now, true
		}
		if !ok {
			continue
		}
		tr, root, err := d.SnapshotTree(ctx, si.ID)
		if err != nil {
			t.Fatalf("iteration %d: tree of %s: %v", iter, si.ID, err)
		}
		img = padded(img, 0, tr.Size())
		want, err := hashtree.Build(ctx, bytes.NewReader(img), tr.Size(), tr.BlockSize(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if w := want.Root(); w != root {
			diff, _ := hashtree.Diff(tr, want, 5)
			t.Fatalf("iteration %d: snapshot %s: root %x, a full build %x; leaves differ: %v", iter, si.ID, root[:8], w[:8], diff)
		}
	}
}
