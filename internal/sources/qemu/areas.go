package qemu

import (
	"context"
	"fmt"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
)

// NBD block status flags (doc/proto.md): base:allocation's ZERO bit, and
// a dirty bitmap's "dirty" bit.
const (
	stateZero  = 2
	stateDirty = 1
)

// readAreas asks the view's export for the extents of a meta context:
// dirty ones of a bitmap, or all but those reading as zeros for
// base:allocation.
func (s *Source) readAreas(ctx context.Context, v *view, metaCtx string) ([]backup.Area, error) {
	return Areas(ctx, v.uri(s.nbdSock), metaCtx, v.size)
}

// Areas reads the areas to back up of the NBD export at uri, of size
// bytes, from a meta context: "qemu:dirty-bitmap:NAME" (dirty extents)
// or "base:allocation" (all but extents that read as zeros). The libvirt
// source uses it on libvirt's exports too.
func Areas(ctx context.Context, uri, metaCtx string, size int64) ([]backup.Area, error) {
	c, err := nbd.Dial(ctx, uri, &nbd.ClientOptions{MetaContexts: []string{metaCtx}})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", uri, err)
	}
	defer c.Close()
	want := func(f uint32) bool { return f&stateZero == 0 }
	if metaCtx != "base:allocation" {
		want = func(f uint32) bool { return f&stateDirty != 0 }
	}
	var out []backup.Area
	for off := int64(0); off < size; {
		exts, err := c.BlockStatus(ctx, metaCtx, off, size-off, false)
		if err != nil {
			return nil, fmt.Errorf("block status %s at %d: %w", metaCtx, off, err)
		}
		if len(exts) == 0 {
			return nil, fmt.Errorf("block status %s at %d: no extents", metaCtx, off)
		}
		for _, e := range exts {
			n := min(int64(e.Length), size-off)
			if n <= 0 {
				break
			}
			if want(e.Flags) {
				if k := len(out); k > 0 && out[k-1].Start+out[k-1].Length == off {
					out[k-1].Length += n
				} else {
					out = append(out, backup.Area{Start: off, Length: n})
				}
			}
			off += n
		}
	}
	return out, nil
}
