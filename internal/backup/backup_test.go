package backup

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// testHost adapts an in-process host to Host; reads go through a real NBD
// server on a unix socket, as a backup proxy's would.
type testHost struct {
	h    *host.Host
	sock string

	mu    sync.Mutex
	trees map[string]*hashtree.Tree // by snapshot: what SnapshotRoot answered
}

// SnapshotRoot makes testHost a RootHost: until the engine keeps its own
// tree, the root of the snapshot's image computed whole
// (hashtree.Build), which is what the engine's must equal.
func (th *testHost) SnapshotRoot(ctx context.Context, name, snap string) (hashtree.Hash, int, error) {
	t, err := th.tree(ctx, name, snap)
	if err != nil {
		return hashtree.Hash{}, 0, err
	}
	return t.Root(), t.BlockSize(), nil
}

// SnapshotLeaves makes testHost a LeafHost.
func (th *testHost) SnapshotLeaves(ctx context.Context, name, snap string, first, n int64) ([]hashtree.Hash, error) {
	t, err := th.tree(ctx, name, snap)
	if err != nil {
		return nil, err
	}
	out := make([]hashtree.Hash, n)
	for i := range out {
		if out[i], err = t.Leaf(first + int64(i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (th *testHost) tree(ctx context.Context, name, snap string) (*hashtree.Tree, error) {
	th.mu.Lock()
	defer th.mu.Unlock()
	if t, ok := th.trees[snap]; ok {
		return t, nil
	}
	d, s, err := th.openSnapshot(name, snap)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	t, err := hashtree.Build(ctx, s, s.Size(), DefaultTreeBlockSize, 2)
	if err != nil {
		return nil, err
	}
	// Once the engine keeps its own tree, it must be this one.
	if _, root, err := d.SnapshotTree(ctx, snap); err == nil && root != t.Root() {
		return nil, fmt.Errorf("the engine's root of %s is %x, its image's %x", snap, root[:8], t.Root())
	} else if err != nil && !errors.Is(err, disk.ErrNoTree) {
		return nil, err
	}
	if th.trees == nil {
		th.trees = map[string]*hashtree.Tree{}
	}
	th.trees[snap] = t
	return t, nil
}

// checkRoot checks that a backup's point holds the root the host gave
// for its snapshot, proven: every backup test goes through it.
func (th *testHost) checkRoot(t *testing.T, res *Result) {
	t.Helper()
	th.mu.Lock()
	want, ok := th.trees[res.Snapshot.ID]
	th.mu.Unlock()
	if !ok {
		t.Fatalf("the backup never asked for the root of snapshot %s", res.Snapshot.ID)
	}
	root := want.Root()
	if !res.RootProven || res.Root != root || res.Manifest.Tree == nil || res.Manifest.Tree.Root != hex.EncodeToString(root[:]) || !res.Manifest.Tree.Proven {
		t.Fatalf("point root %x (proven %v, %q), manifest tree %+v; host's root %x", res.Root, res.RootProven, res.RootNote, res.Manifest.Tree, root)
	}
}

func (th *testHost) Disk(ctx context.Context, name string) (DiskInfo, error) {
	d, err := th.h.Disk(name)
	if err != nil {
		return DiskInfo{}, err
	}
	st, err := d.Stat()
	return DiskInfo{UUID: st.UUID, Size: st.Size}, err
}

func (th *testHost) Snapshots(ctx context.Context, name string) ([]Snapshot, error) {
	d, err := th.h.Disk(name)
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, s := range d.Snapshots() {
		out = append(out, Snapshot{ID: s.ID, ChangeID: s.ChangeID, Size: s.Size, Created: s.Created, Description: s.Description})
	}
	return out, nil
}

func (th *testHost) CreateSnapshot(ctx context.Context, name, desc string) (Snapshot, error) {
	d, err := th.h.Disk(name)
	if err != nil {
		return Snapshot{}, err
	}
	s, err := d.CreateSnapshot("", desc)
	if errors.Is(err, disk.ErrBusy) {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrBusy, err)
	}
	return Snapshot{ID: s.ID, ChangeID: s.ChangeID, Size: s.Size, Created: s.Created}, err
}

func (th *testHost) openSnapshot(name, snap string) (*disk.Disk, *disk.Snapshot, error) {
	d, err := th.h.Disk(name)
	if err != nil {
		return nil, nil, err
	}
	s, err := d.OpenSnapshot(snap)
	return d, s, err
}

func (th *testHost) ChangedAreas(ctx context.Context, name, snap string, start int64, since string) (*Areas, error) {
	_, s, err := th.openSnapshot(name, snap)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ca, err := s.ChangedAreas(start, since)
	if errors.Is(err, disk.ErrChangeIDInvalid) {
		return nil, fmt.Errorf("%w: %v", ErrChangeIDInvalid, err)
	}
	if err != nil {
		return nil, err
	}
	out := &Areas{StartOffset: ca.StartOffset, Length: ca.Length}
	for _, a := range ca.ChangedArea {
		out.Changed = append(out.Changed, Area{a.Start, a.Length})
	}
	return out, nil
}

func (th *testHost) DeleteSnapshot(ctx context.Context, name, snap string) error {
	d, err := th.h.Disk(name)
	if err != nil {
		return err
	}
	t, err := d.DeleteSnapshot(snap)
	if errors.Is(err, disk.ErrBusy) {
		return fmt.Errorf("%w: %v", ErrBusy, err)
	}
	if err != nil {
		return err
	}
	return t.Wait(ctx)
}

func (th *testHost) open(ctx context.Context, name, snap string) (Source, error) {
	return nbd.Dial(ctx, "nbd+unix:///"+name+"@"+snap+"?socket="+th.sock, nil)
}

// nbdTarget restores into a live disk over NBD.
type nbdTarget struct{ *nbd.Client }

func (t nbdTarget) WriteAt(ctx context.Context, p []byte, off int64) error {
	return t.Client.WriteAt(ctx, p, off, false)
}
func (t nbdTarget) Zero(ctx context.Context, off, n int64) error {
	return t.Client.Zero(ctx, off, n, true, false)
}

type fixture struct {
	th   *testHost
	repo *repo.Repository
	ds   string // the datastore's directory
	be   backend.Backend
}

func newFixture(t *testing.T, opts ...func(*repo.Options)) *fixture {
	e := apitest.Start(t, apitest.Options{NBD: true})
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ro := repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 8 << 10, Threads: 1}}
	for _, o := range opts {
		o(&ro)
	}
	r, err := repo.Init(context.Background(), be, "secret", ro)
	if err != nil {
		t.Fatal(err)
	}
	checkAfterTest(t, be)
	return &fixture{th: &testHost{h: e.Host, sock: e.NBDSock}, repo: r, ds: e.Dir, be: be}
}

// checkAfterTest checks a fixture's repository, data and all, when its
// test ends: nothing a backup or restore does, failed or not, may leave
// it inconsistent.
func checkAfterTest(t *testing.T, be backend.Backend) {
	repotest.CheckAtEnd(t, nil, func(ctx context.Context) error {
		r, err := repo.Open(ctx, be, "secret", repo.Options{})
		if err != nil {
			return err
		}
		res, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
		if err != nil {
			return err
		}
		if err := res.Err(); err != nil {
			return err
		}
		return checkRootsProven(ctx, r, res)
	})
}

// checkRootsProven: check --read-data proved the root of every point
// that has one.
func checkRootsProven(ctx context.Context, r *repo.Repository, res *repo.CheckResult) error {
	ms, err := r.ListManifests(ctx)
	if err != nil {
		return err
	}
	with := 0
	for _, m := range ms {
		if m.Tree != nil {
			with++
		}
	}
	if res.RootsProven != with {
		return fmt.Errorf("check proved %d roots of %d points with one", res.RootsProven, with)
	}
	return nil
}

func (f *fixture) backup(t *testing.T, name string) *Result {
	t.Helper()
	res, err := Run(context.Background(), Options{Disk: name, Host: f.th, Repo: f.repo, Open: f.th.open})
	if err != nil {
		t.Fatal(err)
	}
	f.th.checkRoot(t, res)
	return res
}

// restoreInto restores a manifest into a new disk and returns its bytes.
func (f *fixture) restoreInto(t *testing.T, id repo.ID, name string, size int64) []byte {
	t.Helper()
	ctx := context.Background()
	if _, err := f.th.h.Create(name, size, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	c, err := nbd.Dial(ctx, "nbd+unix:///"+name+"?socket="+f.th.sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var last int64
	progress := func(done, total int64) {
		if done <= last || done > total || total != size {
			t.Errorf("progress %d/%d after %d of %d", done, total, last, size)
		}
		last = done
	}
	res, err := Restore(ctx, RestoreOptions{Repo: f.repo, Manifest: id, Target: nbdTarget{c}, TargetIsZero: true, ReadBack: true, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if last != size {
		t.Fatalf("progress ended at %d of %d", last, size)
	}
	if res.Verified == 0 {
		t.Fatal("nothing verified")
	}
	got := make([]byte, size)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestFullIncrementalRestore(t *testing.T) {
	f := newFixture(t)
	const size = 32 << 20
	d, err := f.th.h.Create("vm", size, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	rng := repotest.Rand(1)
	img := repotest.Image(rng, size, 1<<20, 0.5) // half the MiBs hold data
	d.WriteAt(img, 0)
	first := f.backup(t, "vm")
	if first.Mode != "full" || first.Parent != nil {
		t.Fatalf("first backup: %+v", first)
	}
	if st, _ := d.Stat(); len(st.Snapshots) != 0 {
		t.Fatal("backup left its snapshot behind")
	}
	v1 := bytes.Clone(img)
	blocks := repotest.Mutate(rng, img, 64<<10, 0.01) // 1% of 64 KiB blocks
	for _, b := range blocks {
		d.WriteAt(img[b*64<<10:(b+1)*64<<10], int64(b)*64<<10)
	}
	changed := len(blocks) * 64 << 10
	second := f.backup(t, "vm")
	if second.Mode != "incremental" || second.ReadBytes != int64(changed) {
		t.Fatalf("incremental read %d bytes, %d changed: %+v", second.ReadBytes, changed, second)
	}
	if nb := second.Manifest.Stats.NewBytes; nb > uint64(changed)*3/2 {
		t.Fatalf("incremental stored %d new bytes for %d changed", nb, changed)
	}
	if got := f.restoreInto(t, first.Manifest.ID, "r1", size); !bytes.Equal(got, v1) {
		t.Fatal("first restore point differs")
	}
	if got := f.restoreInto(t, second.Manifest.ID, "r2", size); !bytes.Equal(got, img) {
		t.Fatal("second restore point differs")
	}
}

func TestInvalidChangeIDFallsBackToFull(t *testing.T) {
	f := newFixture(t)
	d, _ := f.th.h.Create("vm", 4<<20, disk.Options{})
	d.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 0)
	f.backup(t, "vm")
	if err := d.ResetCBT(); err != nil {
		t.Fatal(err)
	}
	res := f.backup(t, "vm")
	if res.Mode != "full" || res.Reason == "" {
		t.Fatalf("after a CBT reset: mode %s reason %q", res.Mode, res.Reason)
	}
	if got := f.restoreInto(t, res.Manifest.ID, "r", 4<<20); !bytes.Equal(got[:1<<20], bytes.Repeat([]byte{7}, 1<<20)) {
		t.Fatal("restore after fallback differs")
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		areas []Area
		want  []slotRun
	}{
		{nil, nil},
		{[]Area{{0, 1}}, []slotRun{{0, 1}}},
		{[]Area{{100, 64 << 10}}, []slotRun{{0, 2}}},
		{[]Area{{0, 64 << 10}, {64 << 10, 64 << 10}, {10 << 20, 1}}, []slotRun{{0, 2}, {160, 1}}},
		{[]Area{{0, 65 * 64 << 10}}, []slotRun{{0, 64}, {64, 1}}},
		{[]Area{{0, 64 << 10}, {32 << 10, 64 << 10}}, []slotRun{{0, 2}}},
	}
	for i, tc := range tests {
		got := plan(tc.areas, 64<<10, 100<<20)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%d: plan %v, want %v", i, got, tc.want)
		}
	}
}

// TestSlotSums: a partial restore's read-back keeps one sum per restored
// slot, each slot of its runs with a place of its own.
func TestSlotSums(t *testing.T) {
	runs := plan([]Area{{0, 1}, {10 << 20, 3 * 64 << 10}, {1 << 40, 1}}, 64<<10, 2<<40)
	s := newSlotSums(runs)
	if len(s.v) != 5 {
		t.Fatalf("%d sums for runs %v, want 5", len(s.v), runs)
	}
	seen := map[*uint32]bool{}
	for _, r := range runs {
		for slot := r.first; slot < r.first+r.n; slot++ {
			p := s.at(uint64(slot))
			if seen[p] {
				t.Fatalf("slot %d shares its sum", slot)
			}
			seen[p] = true
		}
	}
}

// A snapshot left by a killed backup (its process is gone) is removed by
// the next backup; one of a live process is kept.
func TestStaleBackupSnapshotRemoved(t *testing.T) {
	f := newFixture(t)
	d, _ := f.th.h.Create("vm", 1<<20, disk.Options{})
	host, _ := os.Hostname()
	dead := exec.Command("true")
	dead.Run() // its pid is free now
	d.CreateSnapshot("stale", fmt.Sprintf("blockwise backup host=%s pid=%d", host, dead.Process.Pid))
	d.CreateSnapshot("live", fmt.Sprintf("blockwise backup host=%s pid=%d", host, os.Getpid()))
	f.backup(t, "vm")
	var ids []string
	for _, s := range d.Snapshots() {
		ids = append(ids, s.ID)
	}
	if fmt.Sprint(ids) != "[live]" {
		t.Fatalf("snapshots after backup: %v", ids)
	}
}

// A backup that starts while a consolidation runs waits for it instead of
// failing on the busy disk.
func TestBackupWaitsForConsolidation(t *testing.T) {
	f := newFixture(t)
	d, _ := f.th.h.Create("vm", 64<<20, disk.Options{})
	d.WriteAt(bytes.Repeat([]byte{1}, 32<<20), 0)
	d.CreateSnapshot("old", "")
	d.WriteAt(bytes.Repeat([]byte{2}, 32<<20), 16<<20) // a delta to merge
	task, err := d.DeleteSnapshot("old")
	if err != nil {
		t.Fatal(err)
	}
	res := f.backup(t, "vm")
	if !isDone(task) {
		t.Fatal("backup finished while the consolidation still ran")
	}
	if res.Manifest == nil {
		t.Fatal("no restore point")
	}
}

func isDone(t *disk.Task) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// memTarget is a restore target in memory that can lose one write.
type memTarget struct {
	mu     sync.Mutex
	data   []byte
	lossAt int64 // the write covering this offset is dropped; -1 for none
}

func (m *memTarget) WriteAt(_ context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lossAt >= off && m.lossAt < off+int64(len(p)) {
		return nil // acknowledged, never stored
	}
	copy(m.data[off:], p)
	return nil
}

func (m *memTarget) ReadAt(_ context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}

func (m *memTarget) Zero(_ context.Context, off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

func (m *memTarget) Flush(context.Context) error { return nil }
func (m *memTarget) Size() int64                 { return int64(len(m.data)) }

// TestRestoreReadBack: a target that acknowledges a write and loses it is
// caught by the read-back; without it the restore cannot know. Zero slots
// are written as zeroes when the target is not known to be zero.
func TestRestoreReadBack(t *testing.T) {
	f := newFixture(t)
	const size = 8<<20 + 512
	d, err := f.th.h.Create("vm", size, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	rng := rand.New(rand.NewSource(2))
	for _, mib := range []int{0, 1, 3, 7} {
		rng.Read(img[mib<<20 : (mib+1)<<20])
	}
	rng.Read(img[size-512:])
	d.WriteAt(img, 0)
	id := f.backup(t, "vm").Manifest.ID
	for _, tc := range []struct {
		lossAt   int64
		readBack bool
		wantErr  bool
	}{{-1, true, false}, {3<<20 + 5, true, true}, {3<<20 + 5, false, false}, {size - 1, true, true}} {
		tgt := &memTarget{data: bytes.Repeat([]byte{0xaa}, size), lossAt: tc.lossAt}
		_, err := Restore(context.Background(), RestoreOptions{Repo: f.repo, Manifest: id, Target: tgt, ReadBack: tc.readBack})
		if (err != nil) != tc.wantErr {
			t.Fatalf("loss at %d, read-back %v: err %v", tc.lossAt, tc.readBack, err)
		}
		if tc.lossAt < 0 && !bytes.Equal(tgt.data, img) {
			t.Fatal("restore into a dirty target differs from the image")
		}
	}
}

// gatedTarget blocks its first write until opened.
type gatedTarget struct {
	*memTarget
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (g *gatedTarget) WriteAt(ctx context.Context, p []byte, off int64) error {
	g.once.Do(func() { close(g.entered); <-g.gate })
	return g.memTarget.WriteAt(ctx, p, off)
}

// TestRestoreHoldsLock: while a restore runs, a prune cannot take the
// repository (it would remove packs the restore reads); afterwards it can.
func TestRestoreHoldsLock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	d, err := f.th.h.Create("vm", 4<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 4<<20)
	rand.New(rand.NewSource(3)).Read(img)
	d.WriteAt(img, 0)
	id := f.backup(t, "vm").Manifest.ID
	tgt := &gatedTarget{memTarget: &memTarget{data: make([]byte, 4<<20), lossAt: -1}, entered: make(chan struct{}), gate: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := Restore(ctx, RestoreOptions{Repo: f.repo, Manifest: id, Target: tgt})
		done <- err
	}()
	<-tgt.entered
	if _, err := f.repo.Prune(ctx); !errors.Is(err, repo.ErrLocked) {
		t.Errorf("prune during a restore: %v, want ErrLocked", err)
	}
	close(tgt.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tgt.data, img) {
		t.Fatal("restored image differs")
	}
	if _, err := f.repo.Prune(ctx); err != nil {
		t.Fatalf("prune after the restore: %v", err)
	}
}

// LatestFor takes the parent from the cached heads, and when a cached
// head lies (here: an old point claims to be the newest) it notices on
// loading that manifest and answers from the manifests themselves.
func TestLatestForDamagedHeadCache(t *testing.T) {
	cache := t.TempDir()
	f := newFixture(t, func(o *repo.Options) { o.CacheDir = cache })
	ctx := context.Background()
	d, err := f.th.h.Create("vm", 1<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	first := f.backup(t, "vm").Manifest
	d.WriteAt(bytes.Repeat([]byte{2}, 4096), 0)
	second := f.backup(t, "vm").Manifest
	m, err := LatestFor(ctx, f.repo, "vm", first.DiskUUID)
	if err != nil || m == nil || m.ID != second.ID {
		t.Fatalf("latest: %v %v, want %v", m, err, second.ID.Short())
	}
	heads, err := filepath.Glob(filepath.Join(cache, "*", "heads", first.ID.String()))
	if err != nil || len(heads) != 1 {
		t.Fatalf("cached head of the first point: %v %v", heads, err)
	}
	lie := repo.Head{ID: first.ID, Meta: first.Meta}
	lie.Time = second.Time.Add(time.Hour)
	data, _ := json.Marshal(lie)
	if err := os.WriteFile(heads[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err = LatestFor(ctx, f.repo, "vm", first.DiskUUID)
	if err != nil || m == nil || m.ID != second.ID {
		t.Fatalf("latest with a lying cache: %v %v, want %v", m, err, second.ID.Short())
	}
}
