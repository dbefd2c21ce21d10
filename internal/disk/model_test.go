package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// long runs the long randomized and crash modes (BLOCKWISE_LONG=1).
var long = os.Getenv("BLOCKWISE_LONG") != ""

// model is the reference: what the disk and each snapshot must read.
type model struct {
	t      *testing.T
	rng    *rand.Rand
	ds     *Datastore
	d      *Disk
	ref    []byte
	snaps  map[string]*modelSnap
	order  []string // snapshot IDs, oldest first
	cbtG   int64
	dirty  map[int64]bool // CBT blocks written since the last snapshot
	fuzzy  bool           // a crash since the last snapshot: CBT may over-report
	epochs []*modelSnap   // every snapshot ever taken, deleted ones too
	hot    int64          // if set, half the requests land within 256 KiB of it
	log    []string
	clones map[string]*modelClone // open clones of the disk's snapshots
	nclone int
}

// modelClone is a clone (linked or full) of a snapshot and what it reads.
type modelClone struct {
	d      *Disk
	ref    []byte
	linked bool
}

type modelSnap struct {
	data    []byte
	change  string
	written map[int64]bool // blocks written in the epoch this snapshot closed
	fuzzy   bool
}

func newModel(t *testing.T, seed int64) *model {
	rng := rand.New(rand.NewSource(seed))
	ds, err := OpenDatastore(fastTempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	grain := []int64{512, 4096, 16384}[rng.Intn(3)]
	size := int64(rng.Intn(512)+1) * 1024 // 1 KiB .. 512 KiB
	var hot int64
	if rng.Intn(5) == 0 {
		// Grains past the first roaring container (index 65536) take
		// other bitmap paths: a disk with 512-byte grains whose writes
		// cluster around grain 65536 and at the start.
		grain, size, hot = 512, 34<<20, 65536*512
	}
	cfg := cbt.Config{Granularity: 8192, RegionSize: 65536, Retain: 4 + rng.Intn(8)}
	d, err := ds.Create("m", size, Options{Grain: grain, CBT: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return &model{t: t, rng: rng, ds: ds, d: d, ref: make([]byte, size), snaps: map[string]*modelSnap{},
		cbtG: cfg.Granularity, dirty: map[int64]bool{}, hot: hot, clones: map[string]*modelClone{}}
}

func (m *model) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("%s\nops:\n%s", fmt.Sprintf(format, args...), joinTail(m.log, 40))
}

func joinTail(s []string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	var b bytes.Buffer
	for _, x := range s {
		b.WriteString("  " + x + "\n")
	}
	return b.String()
}

func (m *model) span() (int64, int64) {
	sectors := int64(len(m.ref)) / Sector
	off := m.rng.Int63n(sectors) * Sector
	if m.hot > 0 && m.rng.Intn(2) == 0 {
		off = m.hot - 256<<10 + m.rng.Int63n(1024)*Sector
	} else if m.hot > 0 {
		off = m.rng.Int63n(1024) * Sector
	}
	n := (m.rng.Int63n(min(sectors-off/Sector, 80)) + 1) * Sector
	return off, n
}

func (m *model) markDirty(off, n int64) {
	for b := off / m.cbtG; b*m.cbtG < off+n; b++ {
		m.dirty[b] = true
	}
}

func (m *model) step() {
	switch op := m.rng.Intn(112); {
	case op >= 100:
		m.vaai(op - 100)
	case op < 40:
		m.write()
	case op < 50:
		m.zero()
	case op < 55:
		m.grow()
	case op < 67:
		m.snapshot()
	case op < 75:
		m.deleteSnapshot()
	case op < 80:
		m.reopen(m.rng.Intn(2) == 0)
	case op < 85:
		if err := m.d.Flush(); err != nil {
			m.fail("flush: %v", err)
		}
	default:
		m.verify()
	}
}

func (m *model) write() {
	off, n := m.span()
	p := make([]byte, n)
	m.rng.Read(p)
	m.log = append(m.log, fmt.Sprintf("write %d+%d", off, n))
	if _, err := m.d.WriteAt(p, off); err != nil {
		m.fail("write: %v", err)
	}
	copy(m.ref[off:], p)
	m.markDirty(off, n)
}

func (m *model) zero() {
	off, n := m.span()
	noHole, fast := m.rng.Intn(2) == 0, m.rng.Intn(3) == 0
	m.log = append(m.log, fmt.Sprintf("zero %d+%d noHole=%v fast=%v", off, n, noHole, fast))
	if err := m.d.WriteZeroes(off, n, noHole, fast); err != nil {
		m.fail("zero: %v", err)
	}
	clear(m.ref[off : off+n])
	m.markDirty(off, n)
}

func (m *model) grow() {
	size := int64(len(m.ref)) + int64(m.rng.Intn(64)+1)*Sector
	m.log = append(m.log, fmt.Sprintf("grow %d", size))
	if err := m.d.Grow(size); err != nil {
		m.fail("grow: %v", err)
	}
	m.markDirty(int64(len(m.ref)), size-int64(len(m.ref)))
	m.ref = append(m.ref, make([]byte, size-int64(len(m.ref)))...)
}

func (m *model) snapshot() {
	if m.rng.Intn(2) == 0 {
		m.waitMerge()
	}
	info, err := m.d.CreateSnapshot("", "")
	m.log = append(m.log, fmt.Sprintf("snapshot %s %v", info.ID, err))
	if errors.Is(err, ErrBusy) {
		return
	}
	if err != nil {
		m.fail("snapshot: %v", err)
	}
	ms := &modelSnap{data: bytes.Clone(m.ref), change: info.ChangeID, written: m.dirty, fuzzy: m.fuzzy}
	m.snaps[info.ID] = ms
	m.epochs = append(m.epochs, ms)
	m.order = append(m.order, info.ID)
	m.dirty, m.fuzzy = map[int64]bool{}, false
}

func (m *model) waitMerge() {
	if t := m.d.Consolidation(); t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := t.Wait(ctx); err != nil && !errors.Is(err, context.Canceled) {
			m.fail("consolidation: %v", err)
		}
	}
}

func (m *model) deleteSnapshot() {
	if len(m.order) == 0 {
		return
	}
	i := m.rng.Intn(len(m.order))
	id := m.order[i]
	_, err := m.d.DeleteSnapshot(id)
	m.log = append(m.log, fmt.Sprintf("delete %s %v", id, err))
	if errors.Is(err, ErrBusy) {
		return
	}
	if err != nil {
		m.fail("delete: %v", err)
	}
	delete(m.snaps, id)
	m.order = append(m.order[:i], m.order[i+1:]...)
}

// reopen closes cleanly, or flushes and abandons the disk like a killed
// process (journal replay and CBT intent recovery then run).
func (m *model) reopen(crash bool) {
	m.log = append(m.log, fmt.Sprintf("reopen crash=%v", crash))
	if crash {
		if err := m.d.Flush(); err != nil {
			m.fail("flush: %v", err)
		}
		m.d.abandon()
		m.fuzzy = true
	} else if err := m.d.Close(); err != nil {
		m.fail("close: %v", err)
	}
	m.damageTree()
	d, err := m.ds.Open("m")
	if err != nil {
		m.fail("reopen: %v", err)
	}
	m.d = d
}

// damageTree removes or corrupts a snapshot's tree file, as a crash
// before its rename or a bad sector would (T4: it is recomputed).
func (m *model) damageTree() {
	if len(m.order) == 0 || m.rng.Intn(2) == 0 {
		return
	}
	id := m.order[m.rng.Intn(len(m.order))]
	p := filepath.Join(m.d.Path(), treeDirName, id+".tree")
	if m.rng.Intn(2) == 0 {
		os.Remove(p)
		m.log = append(m.log, "remove tree of "+id)
		return
	}
	if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
		b[m.rng.Intn(len(b))] ^= 0x40
		os.WriteFile(p, b, 0o600)
		m.log = append(m.log, "corrupt tree of "+id)
	}
}

// verifyTree checks the snapshot's root (computed in the background,
// incrementally from an older snapshot's tree) against a full Build of
// the snapshot's image.
func (m *model) verifyTree(id string, data []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, root, err := m.d.SnapshotTree(ctx, id)
	if err != nil {
		m.fail("tree of snapshot %s: %v", id, err)
	}
	want, err := hashtree.Build(ctx, bytes.NewReader(data), int64(len(data)), int(m.cbtG), 1)
	if err != nil {
		m.fail("build %s: %v", id, err)
	}
	if w := want.Root(); root != w || tr.Size() != int64(len(data)) {
		d, _ := hashtree.Diff(tr, want, 5)
		m.fail("snapshot %s: root %x, a full build %x (size %d, %d); leaves differ: %v", id, root[:8], w[:8], tr.Size(), len(data), d)
	}
	for _, si := range m.d.Snapshots() {
		if si.ID == id && (si.Root != root || si.TreeBlockSize != int(m.cbtG)) {
			m.fail("snapshot %s: info root %x, tree %x", id, si.Root[:8], root[:8])
		}
	}
}

// vaai runs one of the offloads: a copy (from the live disk or a
// snapshot), a trim, a clone of a snapshot (linked or full), a write into
// or the deletion of a clone, or a reclaim.
func (m *model) vaai(op int) {
	switch {
	case op < 4:
		m.copyRange()
	case op < 6:
		off, n := m.span()
		m.log = append(m.log, fmt.Sprintf("trim %d+%d", off, n))
		if err := m.d.Trim(off, n); err != nil {
			m.fail("trim: %v", err)
		}
		clear(m.ref[off : off+n])
		m.markDirty(off, n)
	case op < 8:
		m.clone()
	case op < 10:
		m.cloneIO()
	default:
		m.reclaim()
	}
}

func (m *model) copyRange() {
	src, data := "", m.ref
	if len(m.order) > 0 && m.rng.Intn(2) == 0 {
		src = m.order[m.rng.Intn(len(m.order))]
		data = m.snaps[src].data
	}
	dst, n := m.span()
	n = min(n, int64(len(data)))
	srcOff := m.rng.Int63n(int64(len(data))/Sector-n/Sector+1) * Sector
	m.log = append(m.log, fmt.Sprintf("copy %s:%d -> %d+%d", src, srcOff, dst, n))
	_, err := m.d.CopyFrom(m.d, src, srcOff, dst, n)
	if src == "" && srcOff < dst+n && dst < srcOff+n {
		if !errors.Is(err, ErrInvalid) {
			m.fail("overlapping live copy: %v, want ErrInvalid", err)
		}
		return
	}
	if err != nil {
		m.fail("copy: %v", err)
	}
	copy(m.ref[dst:dst+n], data[srcOff:srcOff+n])
	m.markDirty(dst, n)
}

func (m *model) clone() {
	if len(m.order) == 0 || len(m.clones) >= 3 {
		return
	}
	snap := m.order[m.rng.Intn(len(m.order))]
	m.nclone++
	name, linked := fmt.Sprintf("c%d", m.nclone), m.rng.Intn(2) == 0
	c, _, err := m.ds.Clone(m.d, snap, name, linked)
	m.log = append(m.log, fmt.Sprintf("clone %s of %s linked=%v: %v", name, snap, linked, err))
	if errors.Is(err, ErrBusy) {
		return // a consolidation writes into the snapshot's layers
	}
	if err != nil {
		m.fail("clone: %v", err)
	}
	m.clones[name] = &modelClone{d: c, ref: bytes.Clone(m.snaps[snap].data), linked: linked}
}

// cloneIO writes into a clone, or closes and deletes it.
func (m *model) cloneIO() {
	for name, c := range m.clones {
		if m.rng.Intn(3) == 0 {
			m.log = append(m.log, "delete clone "+name)
			if err := c.d.Close(); err != nil {
				m.fail("close clone: %v", err)
			}
			if err := m.ds.Delete(name); err != nil {
				m.fail("delete clone: %v", err)
			}
			delete(m.clones, name)
			return
		}
		sectors := int64(len(c.ref)) / Sector
		off := m.rng.Int63n(sectors) * Sector
		p := make([]byte, (m.rng.Int63n(min(sectors-off/Sector, 40))+1)*Sector)
		m.rng.Read(p)
		m.log = append(m.log, fmt.Sprintf("write clone %s %d+%d", name, off, len(p)))
		if _, err := c.d.WriteAt(p, off); err != nil {
			m.fail("write clone: %v", err)
		}
		copy(c.ref[off:], p)
		return
	}
}

func (m *model) reclaim() {
	m.log = append(m.log, "reclaim")
	t, err := m.d.Reclaim(0)
	if err != nil {
		m.fail("reclaim: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := t.Wait(ctx); err != nil {
		m.fail("reclaim: %v", err)
	}
}

func (m *model) verify() {
	m.t.Helper()
	for name, c := range m.clones {
		if err := c.d.Check(); err != nil {
			m.fail("check clone %s: %v", name, err)
		}
		got := make([]byte, len(c.ref))
		if _, err := c.d.ReadAt(got, 0); err != nil {
			m.fail("read clone %s: %v", name, err)
		}
		if i := firstDiff(got, c.ref); i >= 0 {
			m.fail("clone %s (linked %v) differs at %d", name, c.linked, i)
		}
	}
	if err := m.d.Check(); err != nil {
		m.fail("check: %v", err)
	}
	got := make([]byte, len(m.ref))
	if _, err := m.d.ReadAt(got, 0); err != nil {
		m.fail("read: %v", err)
	}
	if i := firstDiff(got, m.ref); i >= 0 {
		m.fail("live disk differs at %d", i)
	}
	for _, id := range m.order {
		m.verifySnap(id)
	}
	m.verifyCBT()
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func (m *model) verifySnap(id string) {
	ms := m.snaps[id]
	s, err := m.d.OpenSnapshot(id)
	if err != nil {
		m.fail("open snapshot %s: %v", id, err)
	}
	defer s.Close()
	got := make([]byte, len(ms.data))
	if _, err := s.ReadAt(got, 0); err != nil {
		m.fail("read snapshot %s: %v", id, err)
	}
	if i := firstDiff(got, ms.data); i >= 0 {
		m.fail("snapshot %s differs at %d", id, i)
	}
	m.verifyTree(id, ms.data)
	ca, err := s.ChangedAreas(0, cbt.Any)
	if err != nil {
		m.fail("allocated areas of %s: %v", id, err)
	}
	// Outside the allocated areas everything must be zero.
	pos := int64(0)
	for _, a := range append(ca.ChangedArea, Area{Start: int64(len(ms.data))}) {
		if off := firstNonZero(ms.data[pos:a.Start]); off >= 0 {
			m.fail("snapshot %s: data at %d not in allocated areas", id, pos+int64(off))
		}
		pos = a.Start + a.Length
	}
}

func firstNonZero(p []byte) int {
	for off := 0; off < len(p); off += len(zeroes) {
		c := p[off:min(off+len(zeroes), len(p))]
		if !bytes.Equal(c, zeroes[:len(c)]) {
			for i, b := range c {
				if b != 0 {
					return off + i
				}
			}
		}
	}
	return -1
}

func areaSet(ca *ChangedAreas, unit int64) map[int64]bool {
	set := map[int64]bool{}
	for _, a := range ca.ChangedArea {
		for o := a.Start / unit * unit; o < a.Start+a.Length; o += unit {
			set[o] = true
		}
	}
	return set
}

// verifyCBT checks every pair of snapshots: the changed areas cover every
// block that differs, and (without a crash in between) only blocks written.
func (m *model) verifyCBT() {
	for j, newer := range m.order {
		s, err := m.d.OpenSnapshot(newer)
		if err != nil {
			m.fail("open %s: %v", newer, err)
		}
		for _, older := range m.order[:j] {
			m.verifyPair(s, m.snaps[older], m.snaps[newer], older)
		}
		s.Close()
	}
}

func (m *model) verifyPair(s *Snapshot, old, cur *modelSnap, oldID string) {
	ca, err := s.ChangedAreas(0, old.change)
	if errors.Is(err, cbt.ErrChangeIDInvalid) {
		return // expired by Retain
	}
	if err != nil {
		m.fail("changed areas %s since %s: %v", s.info.ID, oldID, err)
	}
	got := areaSet(ca, m.cbtG)
	for b := int64(0); b*m.cbtG < int64(len(cur.data)); b++ {
		a, e := b*m.cbtG, min((b+1)*m.cbtG, int64(len(cur.data)))
		var before []byte
		if a < int64(len(old.data)) {
			before = old.data[a:min(e, int64(len(old.data)))]
		}
		if !bytes.Equal(before, cur.data[a:e]) && !got[a] {
			m.fail("CBT missed block %d of %s since %s", b, s.info.ID, oldID)
		}
	}
	m.checkLittleElse(got, oldID, s.info.ID)
}

// checkLittleElse: without crashes between the two snapshots, every
// reported block was written in one of the epochs between them.
func (m *model) checkLittleElse(got map[int64]bool, older, newer string) {
	written := map[int64]bool{}
	in := false
	for _, e := range m.epochs {
		if in {
			if e.fuzzy {
				return
			}
			for b := range e.written {
				written[b*m.cbtG] = true
			}
		}
		if e == m.snaps[older] {
			in = true
		}
		if e == m.snaps[newer] {
			break
		}
	}
	for o := range got {
		if !written[o] {
			m.fail("CBT reports block at %d of %s since %s, never written", o, newer, older)
		}
	}
}

func TestModel(t *testing.T) {
	seqs, steps := 60, 120
	if long {
		seqs, steps = 1000, 300
	}
	for i := 0; i < seqs; i++ {
		seed := time.Now().UnixNano() + int64(i)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			m := newModel(t, seed)
			t.Logf("seed %d", seed)
			n := steps
			if m.hot > 0 {
				n = steps / 3 // 34 MiB images: each verification reads them whole
			}
			for range n {
				m.step()
			}
			m.waitMerge()
			m.verify()
			m.reopen(false)
			m.verify()
			if err := m.d.Close(); err != nil {
				t.Fatal(err)
			}
			for _, c := range m.clones {
				if err := c.d.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// fastTempDir is on tmpfs when the machine has one: the model test checks
// logic, not durability (the crash test does that), and fsyncs dominate.
func fastTempDir(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "blockwise-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
