package backup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockwise/blockwise/internal/hashtree"
	"github.com/blockwise/blockwise/internal/repo"
)

// RootHost is a Host that keeps a hash tree per disk (docs/format.md,
// "Hash tree") and tells a snapshot's root, waiting while it computes it.
// A backup from such a host proves its point: it commits only if the
// root of what it stored equals the host's.
type RootHost interface {
	SnapshotRoot(ctx context.Context, disk, snapshot string) (root hashtree.Hash, blockSize int, err error)
}

// LeafHost is a RootHost that also lists a snapshot's leaves, so a
// backup whose root differs can name the blocks that differ and re-read
// only those (a CBT that forgot an area included).
type LeafHost interface {
	// SnapshotLeaves returns the leaves of blocks [first, first+n).
	SnapshotLeaves(ctx context.Context, disk, snapshot string, first, n int64) ([]hashtree.Hash, error)
}

// ErrRootMismatch: the root of the restore point a backup built differs
// from the host's snapshot root even after re-reading the blocks that
// differ: a CBT bug, a transport bug, or a disk changing under its
// snapshot. Nothing was committed.
var ErrRootMismatch = errors.New("restore point root differs from the host's snapshot root")

// rootWait bounds the wait for the host's root after the copy.
const rootWait = 5 * time.Minute

// maxNamed bounds the leaves a mismatch message names.
const maxNamed = 8

// prover builds a backup's tree: the parent point's tree with the
// leaves of the blocks the backup reads set as it reads them, so the
// new root costs no extra read (docs/repository.md, T5).
type prover struct {
	bs    int64 // block size
	chunk int64

	mu   sync.Mutex
	t    *groupTree
	read []Area // what was read, for naming without a LeafHost
}

// newProver starts the tree of a backup, or returns nil and why not.
func newProver(ctx context.Context, o Options, res *Result, parent *repo.Manifest, areas []Area) (*prover, string) {
	bs := int64(res.Snapshot.TreeBlockSize)
	if parent != nil {
		if parent.Tree == nil {
			return nil, "its parent point has no root (a full backup starts one)"
		}
		if bs != 0 && int64(parent.Tree.BlockSize) != bs {
			return nil, fmt.Sprintf("the host's block size %d is not its parent's %d (a full backup starts over)", bs, parent.Tree.BlockSize)
		}
		bs = int64(parent.Tree.BlockSize)
	}
	if bs == 0 {
		bs = DefaultTreeBlockSize
	}
	chunk := int64(o.Repo.Config().ChunkSize)
	if chunk%bs != 0 || !hashtree.ValidBlockSize(int(bs)) {
		return nil, fmt.Sprintf("the repository's chunk size %d is not a multiple of the tree's block size %d", chunk, bs)
	}
	t, err := baseTree(ctx, o.Repo, parent, areas, res.Snapshot.Size, int(bs))
	if err != nil {
		return nil, fmt.Sprintf("its parent's tree cannot be loaded nor rebuilt: %v", err)
	}
	return &prover{bs: bs, chunk: chunk, t: t}, ""
}

// baseTree is the tree a backup starts from: zero for a full one; its
// parent's, loaded by group as needed, for an incremental of the same
// size; the parent's whole tree, resized, after a size change; rebuilt
// from the parent's chunks if its tree was lost.
func baseTree(ctx context.Context, r *repo.Repository, parent *repo.Manifest, areas []Area, size int64, bs int) (*groupTree, error) {
	if parent == nil {
		return newGroupTree(size, bs), nil
	}
	if int64(parent.Size) == size && r.TreeIndexed(parent) {
		if t, err := parentGroupTree(ctx, r, parent); err == nil {
			return t, nil
		}
	}
	full, err := r.LoadTree(ctx, parent)
	if err != nil {
		if full, err = rebuildTree(ctx, r, parent, areas); err != nil {
			return nil, err
		}
	}
	if err := full.Resize(size); err != nil {
		return nil, err
	}
	return fromFull(full), nil
}

// storeInto lets the prover store the groups the copy passes into w
// (passed) and read them back for a re-read.
func (p *prover) storeInto(ctx context.Context, w *repo.SnapshotWriter) {
	t := p.t
	t.store = func(l *hashtree.SparseLeaves) (repo.ID, error) { return w.StoreTreeGroup(ctx, l) }
	t.reload = func(g int, id repo.ID) (*hashtree.SparseLeaves, error) {
		return w.LoadStoredTreeGroup(ctx, id, repo.GroupLen(t.size, t.bs, g), t.bs)
	}
}

// passed stores the groups entirely below slot, which the copy has
// passed: no leaf there is set again but by a re-read.
func (p *prover) passed(slot int64) error {
	end := p.t.leaves // past the image's end: every group
	if off := slot * p.chunk; off < p.t.size {
		end = off / p.bs
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.t.pass(int(end / repo.TreeGroupLeaves))
}

// DefaultTreeBlockSize is the block size of a point's tree when the
// host does not say (the CBT granularity of the engine and QEMU).
const DefaultTreeBlockSize = 64 << 10

// add sets the leaves of the bytes read at off (whole blocks, but for
// the image's last). Hashing happens outside the lock.
func (p *prover) add(off int64, buf []byte) error {
	leaves := make([]hashtree.Hash, (int64(len(buf))+p.bs-1)/p.bs)
	for k := range leaves {
		b := buf[int64(k)*p.bs : min(int64(k+1)*p.bs, int64(len(buf)))]
		if hashtree.IsZero(b) {
			leaves[k] = hashtree.ZeroLeaf(int(p.bs))
		} else {
			leaves[k] = hashtree.LeafHash(b, int(p.bs))
		}
	}
	first := off / p.bs
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range leaves {
		if err := p.t.Set(first+int64(k), l); err != nil {
			return fmt.Errorf("the point's tree: %w", err)
		}
	}
	if n := len(p.read); n > 0 && p.read[n-1].Start+p.read[n-1].Length == off {
		p.read[n-1].Length += int64(len(buf))
	} else {
		p.read = append(p.read, Area{off, int64(len(buf))})
	}
	return nil
}

// hostRoot is the host's root, fetched while the backup reads.
type hostRoot struct {
	done chan struct{}
	root hashtree.Hash
	bs   int
	err  error
}

func fetchRoot(ctx context.Context, rh RootHost, disk, snap string) *hostRoot {
	h := &hostRoot{done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.root, h.bs, h.err = rh.SnapshotRoot(ctx, disk, snap)
	}()
	return h
}

func (h *hostRoot) wait(ctx context.Context) error {
	select {
	case <-h.done:
		return h.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// prove compares the point's root with the host's; on a mismatch it
// locates the leaves that differ, re-reads them once through reread and
// compares again. The result records the root and what happened.
func (p *prover) prove(ctx context.Context, o Options, res *Result, h *hostRoot, reread func([]Area) error) error {
	ours := p.t.Root()
	res.Root = ours
	if h == nil {
		res.RootNote = "computed; the host keeps no hash tree to prove it against"
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, rootWait)
	defer cancel()
	if err := h.wait(wctx); errors.Is(err, ErrNoHostTree) {
		res.RootNote = "computed; the host keeps no hash tree of this disk to prove it against"
		return nil
	} else if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// A host that never finishes its tree must not hold the backup.
		res.RootNote = fmt.Sprintf("computed; the host's root did not come within %v", rootWait)
		return nil
	} else if err != nil {
		return fmt.Errorf("the host's snapshot root: %w", err)
	}
	if h.root == ours {
		res.RootProven = true
		return nil
	}
	if int64(h.bs) != p.bs {
		res.RootNote = fmt.Sprintf("computed; the host's tree has %d-byte blocks, this point's %d (its parent's): a full backup starts over", h.bs, p.bs)
		return nil
	}
	diff, named, err := p.locate(ctx, o, res.Snapshot.ID, h.bs)
	if err != nil {
		return err
	}
	if err := reread(diff); err != nil {
		return fmt.Errorf("re-read after a root mismatch (%s): %w", named, err)
	}
	if ours = p.t.Root(); ours != h.root {
		again, named2, err := p.locate(ctx, o, res.Snapshot.ID, h.bs)
		if err == nil && len(again) > 0 {
			named = named2
		}
		return fmt.Errorf("%w: %s still differ after a re-read (a CBT bug, a transport bug, or a disk changing under its snapshot)", ErrRootMismatch, named)
	}
	res.Root, res.RootProven = ours, true
	res.RootNote = "healed: " + named + " differed from the host's and were read again"
	return nil
}

// locate names the blocks whose leaves differ from the host's: exactly,
// from a LeafHost's leaves; otherwise every block the backup read.
func (p *prover) locate(ctx context.Context, o Options, snap string, hostBS int) ([]Area, string, error) {
	lh, ok := o.Host.(LeafHost)
	if !ok || int64(hostBS) != p.bs {
		p.mu.Lock()
		defer p.mu.Unlock()
		read := slices.Clone(p.read)
		slices.SortFunc(read, func(a, b Area) int { return cmp.Compare(a.Start, b.Start) })
		return read, "the blocks read (" + areasString(read, maxNamed) + ")", nil
	}
	var diff []int64
	const span = 64 * hashtree.PageLeaves // 2 MiB of leaves a request
	for first := int64(0); first < p.t.Leaves(); first += span {
		n := min(span, p.t.Leaves()-first)
		theirs, err := lh.SnapshotLeaves(ctx, o.Disk, snap, first, n)
		if err != nil {
			return nil, "", fmt.Errorf("the host's leaves at %d: %w", first*p.bs, err)
		}
		if int64(len(theirs)) != n {
			return nil, "", fmt.Errorf("the host returned %d leaves at %d, want %d", len(theirs), first*p.bs, n)
		}
		for i, h := range theirs {
			ours, err := p.t.Leaf(first + int64(i))
			if err != nil {
				return nil, "", err
			}
			if ours != h {
				diff = append(diff, first+int64(i))
			}
		}
	}
	var areas []Area
	for _, l := range diff {
		areas = append(areas, Area{l * p.bs, p.bs})
	}
	return areas, leavesString(diff, p.bs), nil
}

// leavesString names leaves by index and offset, at most maxNamed.
func leavesString(leaves []int64, bs int64) string {
	if len(leaves) == 0 {
		return "no leaf (the roots differ in size or block size)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d leaves (", len(leaves))
	for i, l := range leaves[:min(len(leaves), maxNamed)] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "leaf %d at offset %d", l, l*bs)
	}
	if len(leaves) > maxNamed {
		b.WriteString(", …")
	}
	b.WriteString(")")
	return b.String()
}

func areasString(areas []Area, limit int) string {
	var parts []string
	for _, a := range areas[:min(len(areas), limit)] {
		parts = append(parts, fmt.Sprintf("%d+%d", a.Start, a.Length))
	}
	if len(areas) > limit {
		parts = append(parts, fmt.Sprintf("… %d areas in all", len(areas)))
	}
	return strings.Join(parts, ", ")
}

// rebuildTree computes a parent point's tree from its chunks when its
// stored tree is lost (a pack lost, then repair index): repository
// reads, not disk reads, and none for the slots this backup reads anyway
// (those the parent lost among them). Rare by design.
func rebuildTree(ctx context.Context, r *repo.Repository, m *repo.Manifest, areas []Area) (*hashtree.Tree, error) {
	bs := int64(m.Tree.BlockSize)
	chunk := int64(m.ChunkSize)
	if chunk%bs != 0 {
		return nil, fmt.Errorf("chunk size %d is not a multiple of block size %d", chunk, bs)
	}
	t, err := hashtree.New(int64(m.Size), int(bs))
	if err != nil {
		return nil, err
	}
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	runs := plan(areas, chunk, int64(m.Size))
	for slot := int64(0); slot < int64(m.Slots()); slot++ {
		if len(runs) > 0 && runs[0].first+runs[0].n <= slot {
			runs = runs[1:]
		}
		if len(runs) > 0 && runs[0].first <= slot {
			continue // read again from the disk
		}
		data, err := im.ReadChunk(ctx, uint64(slot))
		if err != nil {
			return nil, err
		}
		for k := int64(0); k*bs < int64(len(data)); k++ {
			_ = t.Set(slot*chunk/bs+k, hashtree.LeafHash(data[k*bs:min((k+1)*bs, int64(len(data)))], int(bs)))
		}
	}
	return t, nil
}
