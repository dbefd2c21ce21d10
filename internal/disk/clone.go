package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/journal"
	"github.com/blockwise/blockwise/internal/vfs"
)

// cloneTmpPrefix names the directory a clone is built in before it is
// renamed to its disk name: a crash leaves no half disk under that name,
// and OpenDatastore removes the leftover.
const cloneTmpPrefix = ".clone-"

// Clone makes disk dst from snapshot snap of src, which must be open from
// this datastore (a disk of another datastore is ErrNotSupported).
//
// A linked clone (linked true) is O(1): dst's chain starts with hard links
// to the layer files of src's snapshot, which are frozen, and adds its own
// empty delta; dst never writes into them. src breaks the sharing before a
// consolidation would write into a shared layer (DeleteSnapshot), and a
// deleted disk's shared layers live on as the other disk's links: they
// are kept until their last user goes (docs/format.md, invariant 10).
//
// A full clone is an independent flat disk, copied with CopyFrom
// (reflinks where the file system has them, copy_file_range elsewhere).
// Either way dst has a new UUID and its own CBT (same geometry as src's).
//
// Invariant 10 (docs/format.md).
func (ds *Datastore) Clone(src *Disk, snap, dst string, linked bool) (*Disk, CopyStats, error) {
	var st CopyStats
	if filepath.Dir(src.dir) != ds.dir {
		return nil, st, fmt.Errorf("%w: disk %s is not in this datastore", ErrNotSupported, filepath.Base(src.dir))
	}
	dir, err := ds.diskDir(dst)
	if err != nil {
		return nil, st, err
	}
	if snap == "" {
		return nil, st, fmt.Errorf("%w: a clone needs a snapshot of the source", ErrInvalid)
	}
	if _, err := ds.fs.Stat(dir); err == nil {
		return nil, st, fmt.Errorf("disk %s: %w", dst, ErrExists)
	}
	tmp := filepath.Join(ds.dir, cloneTmpPrefix+dst)
	if err := ds.fs.Mkdir(tmp, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, st, fmt.Errorf("disk %s: %w: a clone of that name is being made", dst, ErrBusy)
		}
		return nil, st, noSpace(err)
	}
	if linked {
		err = ds.linkedClone(src, snap, tmp, dst)
	} else {
		st, err = ds.fullClone(src, snap, tmp, dst)
	}
	if err == nil {
		err = ds.commitClone(tmp, dir)
	}
	if err != nil {
		ds.fs.RemoveAll(tmp)
		return nil, st, noSpace(fmt.Errorf("clone %s: %w", dst, err))
	}
	d, err := ds.Open(dst)
	return d, st, err
}

// commitClone makes the finished clone visible under its name.
func (ds *Datastore) commitClone(tmp, dir string) error {
	if err := vfs.SyncDir(ds.fs, tmp); err != nil {
		return err
	}
	if _, err := ds.fs.Stat(dir); err == nil {
		return fmt.Errorf("disk %s: %w", filepath.Base(dir), ErrExists)
	}
	if err := ds.fs.Rename(tmp, dir); err != nil {
		return err
	}
	return vfs.SyncDir(ds.fs, ds.dir)
}

// linkedClone builds a linked clone of src@snap in tmp.
func (ds *Datastore) linkedClone(src *Disk, snap, tmp, name string) error {
	lock, err := ds.fs.Lock(filepath.Join(tmp, lockName)) // not a leftover
	if err != nil {
		return err
	}
	defer lock.Close()
	src.barrier.RLock() // no consolidation can start meanwhile
	defer src.barrier.RUnlock()
	chain, size, err := src.view(snap)
	if err != nil {
		return err
	}
	top := len(chain) - 1
	if src.merge != nil && src.meta.layerIndex(src.merge.parent.id) <= top {
		return fmt.Errorf("%w: a consolidation is writing into the snapshot's layers", ErrBusy)
	}
	m := &diskMeta{UUID: cbt.NewUUID(), Name: name, Size: size, Grain: src.grain,
		Created: time.Now().UTC(), Gen: 1, NextID: src.meta.NextID + 1}
	// The files are synced in parallel: nothing names the directory
	// until commitClone renames it, so their order does not matter.
	var g errgroup.Group
	for i, l := range chain {
		lm := layerMeta{ID: l.id, Data: src.meta.Layers[i].Data}
		if err := vfs.Link(ds.fs, filepath.Join(src.dir, lm.Data), filepath.Join(tmp, lm.Data)); err != nil {
			if errors.Is(err, errors.ErrUnsupported) {
				return fmt.Errorf("%w: linked clone: %w", ErrNotSupported, err)
			}
			return err
		}
		if !l.flat {
			lm.Map = mapName(l.id, 1)
			p, data := filepath.Join(tmp, lm.Map), l.encodeMap(src.grain)
			g.Go(func() error { return vfs.WriteNew(ds.fs, p, data) })
		}
		m.Layers = append(m.Layers, lm)
	}
	own := src.meta.NextID
	g.Go(func() error { return newFile(ds.fs, filepath.Join(tmp, deltaName(own)), size) })
	m.Layers = append(m.Layers, layerMeta{ID: own, Data: deltaName(own), Map: mapName(own, 1)})
	p, data := filepath.Join(tmp, mapName(own, 1)), newLayer(own, nil, false).encodeMap(src.grain)
	g.Go(func() error { return vfs.WriteNew(ds.fs, p, data) })
	writeFirstGeneration(&g, ds.fs, tmp, m, cbtConfig(src))
	return g.Wait()
}

// newFile creates an empty sparse file of size bytes, synced.
func newFile(fsys vfs.FS, path string, size int64) error {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = vfs.Datasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// cbtConfig is src's tracking geometry, or nil when it tracks nothing.
func cbtConfig(d *Disk) *cbt.Config {
	if d.tracker == nil {
		return nil
	}
	c := d.tracker.Config()
	return &c
}

// writeFirstGeneration writes, on g, generation 1's CBT checkpoint (a
// new tracking identity), empty journal and disk.meta of a directory
// nothing names yet (commitClone syncs it, then renames it).
func writeFirstGeneration(g *errgroup.Group, fsys vfs.FS, dir string, m *diskMeta, cfg *cbt.Config) {
	if cfg != nil {
		m.CBT = &cbtMeta{Checkpoint: cbtName(1)}
		g.Go(func() error {
			tr, err := cbt.New(*cfg, cbt.NewUUID(), m.Size, nil)
			if err != nil {
				return err
			}
			return vfs.WriteNew(fsys, filepath.Join(dir, cbtName(1)), tr.Encode(false))
		})
	}
	g.Go(func() error {
		l, err := journal.Create(fsys, filepath.Join(dir, journalName(1)), 1)
		if err != nil {
			return err
		}
		return l.Close()
	})
	body := m.encode()
	g.Go(func() error { return vfs.WriteNew(fsys, filepath.Join(dir, metaName), body) })
}

// fullClone builds a full clone of src@snap in tmp: a flat disk filled by
// the data mover, one maximum segment at a time.
func (ds *Datastore) fullClone(src *Disk, snap, tmp, name string) (CopyStats, error) {
	var st CopyStats
	src.barrier.RLock()
	_, size, err := src.view(snap)
	cfg := cbtConfig(src)
	src.barrier.RUnlock()
	if err != nil {
		return st, err
	}
	opt := Options{Grain: src.grain, DisableCBT: cfg == nil}
	if cfg != nil {
		opt.CBT = *cfg
	}
	if err := initDisk(ds.fs, tmp, name, size, opt); err != nil {
		return st, err
	}
	d, err := ds.openDir(tmp, name)
	if err != nil {
		return st, err
	}
	for off := int64(0); off < size && err == nil; off += MaxCopySegment {
		var s CopyStats
		s, err = d.CopyFrom(src, snap, off, off, min(MaxCopySegment, size-off))
		st.add(s)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// removeCloneLeftovers removes the build directories of clones a crash
// interrupted; one another process still builds (its lock held) stays.
func (ds *Datastore) removeCloneLeftovers() {
	ents, err := ds.fs.ReadDir(ds.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), cloneTmpPrefix) {
			continue
		}
		p := filepath.Join(ds.dir, e.Name())
		if lock, err := ds.fs.Lock(filepath.Join(p, lockName)); err == nil {
			ds.fs.RemoveAll(p)
			lock.Close()
		}
	}
}
