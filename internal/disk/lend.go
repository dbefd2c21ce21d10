package disk

import (
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Lend maps [off, off+n) of the snapshot read-only when a single layer
// file holds all of it, so a caller can hash and compress the bytes where
// they lie instead of copying them out (ReadAt). It returns nil, nil when
// the range spans layers, holds zero grains or lies past a layer file's
// end; the caller then reads.
//
// Unlike ReadAt's bytes, lent bytes are checked by nobody: they are the
// snapshot's only if Check succeeds after the caller has finished using
// them (a consolidation commits disk.meta before it writes into a frozen
// layer). A caller MUST call Check after use and before it lets anything
// derived from the bytes become visible to others.
func (s *DirectSnapshot) Lend(off, n int64) (*fsutil.Mapping, error) {
	if err := checkRange(off, n, s.size); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	src := 0
	if len(s.chain) > 1 {
		g0, g1 := uint64(off/s.grain), uint64((off+n+s.grain-1)/s.grain)
		runs := resolve(s.chain, g0, g1)
		if len(runs) != 1 || runs[0].st == zeroed {
			return nil, nil
		}
		src = runs[0].src
	}
	f := s.chain[src].f
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < off+n {
		return nil, nil
	}
	return vfs.MapRead(f, off, n) // nil, nil off the OS file system: the caller reads
}
