package disk

import (
	"fmt"
	"path/filepath"

	"github.com/blockwise/blockwise/internal/vfs"
)

// DiskSize is the size of disk name as its disk.meta records it, read
// without opening (or locking) the disk: for accounting what a datastore
// promised (host.Space) without taking disks from other processes.
func (ds *Datastore) DiskSize(name string) (int64, error) {
	dir, err := ds.diskDir(name)
	if err != nil {
		return 0, err
	}
	p := filepath.Join(dir, metaName)
	data, err := vfs.ReadFile(ds.fs, p)
	if err != nil {
		return 0, fmt.Errorf("disk %s: %w: %v", name, ErrNotFound, err)
	}
	m, err := decodeMeta(p, data)
	if err != nil {
		return 0, err
	}
	return m.Size, nil
}
