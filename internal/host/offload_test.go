package host_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/vfs/vfstest"
)

// TestFastZeroENOTSUP: an NBD WRITE_ZEROES with FAST_ZERO that the engine
// could only do by writing zeroes (a datastore without fallocate) fails
// with the NBD sentinel for ENOTSUP and changes nothing; without
// FAST_ZERO it zeroes.
func TestFastZeroENOTSUP(t *testing.T) {
	ds, err := disk.OpenDatastore("/ds", disk.WithFS(vfstest.NewCrashFS()))
	if err != nil {
		t.Fatal(err)
	}
	h := host.New(ds)
	defer h.Close()
	if _, err := h.Create("d", 1<<20, disk.Options{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := h.Open(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	data := bytes.Repeat([]byte{5}, 8192)
	if err := e.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, punch := range []bool{true, false} {
		if err := e.Zero(ctx, 0, 8192, punch, true); !errors.Is(err, nbd.ErrNotSupported) {
			t.Fatalf("FAST_ZERO (punch %v) on a datastore without fallocate: %v, want ENOTSUP", punch, err)
		}
	}
	got := make([]byte, 8192)
	if err := e.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a refused FAST_ZERO changed data: %v", err)
	}
	if err := e.Zero(ctx, 0, 8192, false, false); err != nil {
		t.Fatal(err)
	}
	if err := e.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, make([]byte, 8192)) {
		t.Fatalf("WRITE_ZEROES did not zero: %v", err)
	}
	if o := host.Offloads(ds); o.Reflink || o.MaxCopySegment != disk.MaxCopySegment || o.UnmapGranularity != disk.DefaultGrain {
		t.Fatalf("offloads of an in-memory datastore: %+v", o)
	}
}
