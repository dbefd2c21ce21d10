package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// Offload is what the host can offload to its datastore (VAAI): whether
// full clones and copies share extents (reflink), the most one copy
// request moves, and the unit TRIM frees.
type Offload struct {
	Reflink              bool
	MaxCopySegment       int64
	UnmapGranularity     int64
	CompareAndWriteMax   int64 // bytes of one compare-and-write (a grain)
	CompareAndWriteAlign int64 // its offset's and length's alignment
}

var reflinkProbe struct {
	sync.Mutex
	dirs map[string]bool
}

// Offloads reports the datastore's offload capabilities; whether it can
// reflink is probed once per directory with two small files.
func Offloads(ds *disk.Datastore) Offload {
	return Offload{Reflink: canReflink(ds.Dir()), MaxCopySegment: disk.MaxCopySegment, UnmapGranularity: disk.DefaultGrain,
		CompareAndWriteMax: disk.DefaultGrain, CompareAndWriteAlign: disk.Sector}
}

func canReflink(dir string) bool {
	reflinkProbe.Lock()
	defer reflinkProbe.Unlock()
	if ok, done := reflinkProbe.dirs[dir]; done {
		return ok
	}
	ok := probeReflink(dir)
	if reflinkProbe.dirs == nil {
		reflinkProbe.dirs = map[string]bool{}
	}
	reflinkProbe.dirs[dir] = ok
	return ok
}

func probeReflink(dir string) bool {
	a, err := os.CreateTemp(dir, ".reflink-probe")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	b, err := os.CreateTemp(dir, ".reflink-probe")
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	bs := fsutil.BlockSize(a)
	if _, err := a.WriteAt(make([]byte, bs), 0); err != nil {
		return false
	}
	return fsutil.Reflink(b, a, 0, 0, bs) == nil
}

// Clone makes disk dst from src's snapshot snap (disk.Datastore.Clone)
// and keeps it open. A full clone without a snapshot copies a temporary
// snapshot of the live disk, deleted afterwards, so the clone is one
// point in time of a disk under writes; a linked clone needs a snapshot.
func (h *Host) Clone(ctx context.Context, src, snap, dst string, linked bool) (*disk.Disk, disk.CopyStats, error) {
	var st disk.CopyStats
	if strings.Contains(src, "@") {
		src, snap = SplitExport(src)
	}
	sd, err := h.Disk(src)
	if err != nil {
		return nil, st, err
	}
	if err := disk.ValidName(dst); err != nil {
		return nil, st, err
	}
	if snap == "" {
		if linked {
			return nil, st, fmt.Errorf("%w: a linked clone needs a snapshot (SRC@SNAP)", disk.ErrInvalid)
		}
		tmp := "clone-" + dst
		if _, err := sd.CreateSnapshot(tmp, "temporary snapshot for a full clone"); err != nil {
			return nil, st, err
		}
		defer h.dropSnapshot(sd, tmp)
		snap = tmp
	}
	d, st, err := h.ds.Clone(sd, snap, dst, linked)
	if err != nil {
		return nil, st, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closed {
		d.Close()
		return nil, st, ErrClosed
	}
	h.mu.disks[dst] = d
	return d, st, h.forgetLabels(dst) // a clone has no labels of its own yet
}

// dropSnapshot deletes a temporary snapshot; its consolidation runs on.
func (h *Host) dropSnapshot(d *disk.Disk, id string) {
	_, err := d.DeleteSnapshot(id)
	for errors.Is(err, disk.ErrBusy) { // a consolidation still runs: let it end
		if t := d.Consolidation(); t != nil {
			t.Wait(context.Background())
		}
		_, err = d.DeleteSnapshot(id)
	}
}

// CopySource is the extent a Copy reads. Datastore "" or the host's own
// datastore ID; any other is disk.ErrNotSupported.
type CopySource struct {
	Datastore, Disk, Snapshot string
	Offset                    int64
}

// Copy is the data mover: length bytes of src to offset of disk dst
// (disk.Disk.CopyFrom). A target naming a snapshot is disk.ErrReadOnly.
func (h *Host) Copy(ctx context.Context, dst string, src CopySource, offset, length int64) (disk.CopyStats, error) {
	if src.Datastore != "" && src.Datastore != h.ds.ID() {
		return disk.CopyStats{}, fmt.Errorf("%w: datastore %s is not this host's", disk.ErrNotSupported, src.Datastore)
	}
	if strings.Contains(dst, "@") {
		return disk.CopyStats{}, fmt.Errorf("%s: %w: a snapshot cannot be written", dst, disk.ErrReadOnly)
	}
	dd, err := h.Disk(dst)
	if err != nil {
		return disk.CopyStats{}, err
	}
	sd, err := h.Disk(src.Disk)
	if err != nil {
		return disk.CopyStats{}, fmt.Errorf("source: %w", err)
	}
	return dd.CopyFrom(sd, src.Snapshot, src.Offset, offset, length)
}
