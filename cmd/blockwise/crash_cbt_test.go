package main

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/nbd"
)

// kill -9 of `blockwise serve` after a few small writes scattered over a
// 1 GiB disk: after a restart, `changes` since the previous change ID
// lists every written block and at most 64 MiB more (it listed a whole
// 256 MiB intent region per area touched before: the whole disk here).
func TestKilledServeChangesBounded(t *testing.T) {
	ctx := context.Background()
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "1G")
	var base client.Snapshot
	d.jsonOut(t, &base, "snapshot", "create", "vm", "base")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	const block = 64 << 10
	written := map[int64]bool{}
	for i := int64(0); i < 24; i++ {
		off := i*(41<<20) + i*block/4 // ~41 MiB apart, not block-aligned
		if err := c.WriteAt(ctx, bytes.Repeat([]byte{byte(i + 1)}, 32<<10), off, false); err != nil {
			t.Fatal(err)
		}
		for o := off / block * block; o < off+32<<10; o += block {
			written[o] = true
		}
	}
	d.cmd.Process.Signal(syscall.SIGKILL) // acknowledged, never flushed
	d.cmd.Wait()
	c.Close()

	d2 := startServeIn(t, d.dir)
	defer sigterm(t, d2)
	d2.must(t, "snapshot", "create", "vm", "after")
	var ch client.ChangedAreas
	d2.jsonOut(t, &ch, "changes", "vm", "--snapshot", "after", "--since", base.ChangeID)
	var reported int64
	covered := map[int64]bool{}
	for _, a := range ch.ChangedArea {
		reported += a.Length
		for o := a.Start / block * block; o < a.Start+a.Length; o += block {
			covered[o] = true
		}
	}
	for o := range written {
		if !covered[o] {
			t.Fatalf("block at %d was written and is not listed", o)
		}
	}
	changed := int64(len(written)) * block
	t.Logf("%d KiB written, %d KiB listed after kill -9", changed>>10, reported>>10)
	if reported > changed+64<<20 {
		t.Fatalf("%d MiB listed for %d KiB written: over written + 64 MiB", reported>>20, changed>>10)
	}
}
