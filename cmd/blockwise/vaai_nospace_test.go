package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/testfs"
)

// qemuIOAt runs qemu-io commands against an NBD URI and returns its
// output (empty when every command succeeded quietly).
func qemuIOAt(uri string, cmds ...string) string {
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, _ := exec.Command("qemu-io", append(args, uri)...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// TestNoSpaceLoopFS is issue 17's out-of-space scenario on a real
// disk-backed file system: a 64 MiB ext4 on a loop device. Disk "other"
// holds 8 MiB under snapshot s1 and 8 MiB more above it; disk "fill" is
// written through NBD (qemu-io) until the datastore is full. Then: the
// failing writer gets NBD_ENOSPC; "other"'s overwrites, reads, flushes
// and its snapshot's export keep working; deleting s1 (its consolidation
// frees the 8 MiB delta) lets the same failed write succeed; every
// acknowledged write reads back; the engine's check of every disk is clean.
func TestNoSpaceLoopFS(t *testing.T) {
	needTools(t, "qemu-io", "mkfs.ext4")
	fs := testfs.NewLoopFS(t, 64<<20, "ext4")
	d := startServeIn(t, fs.Dir)
	d.must(t, "disk", "create", "other", "--size", "16M")
	d.must(t, "disk", "create", "fill", "--size", "256M")
	other := strings.TrimSpace(d.must(t, "export", "other"))
	fill := strings.TrimSpace(d.must(t, "export", "fill"))
	const mib = 1 << 20
	if out := qemuIOAt(other, "write -q -P 1 0 8M", "flush"); out != "" {
		t.Fatal(out)
	}
	d.must(t, "snapshot", "create", "other", "s1")
	if out := qemuIOAt(other, "write -q -P 2 0 8M", "flush"); out != "" {
		t.Fatal(out)
	}
	const chunk = 4 * mib
	full := -1
	for i := range 64 {
		out := qemuIOAt(fill, fmt.Sprintf("write -q -P %d %d %d", i+1, i*chunk, chunk), "flush")
		if out != "" {
			if !strings.Contains(out, "No space left on device") {
				t.Fatalf("fill chunk %d: %q, want ENOSPC", i, out)
			}
			full = i
			break
		}
	}
	if full < 2 {
		t.Fatalf("full after %d chunks of a 64 MiB file system", full)
	}
	t.Logf("datastore full at chunk %d (%d MiB written); %d bytes free", full, full*4, fs.Free())
	ctx := context.Background()
	c, err := nbd.Dial(ctx, fill, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.WriteAt(ctx, bytes.Repeat([]byte{0xee}, chunk), int64(full)*chunk, false)
	if we := (*nbd.Error)(nil); !errors.As(err, &we) || we.Code != nbd.ENOSPC {
		t.Fatalf("NBD write on the full datastore: %v, want NBD_ENOSPC", err)
	}
	c.Close()

	// The other disk: overwrites (in its delta), reads, flushes, and its
	// snapshot's export.
	if out := qemuIOAt(other, "write -q -P 3 0 8M", "flush", "read -q -P 3 0 8M", "read -q -P 0 8M 8M"); out != "" {
		t.Fatalf("other disk on a full datastore: %s", out)
	}
	snap := strings.TrimSpace(d.must(t, "export", "other@s1"))
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -q -P 1 0 8M", snap).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("other's snapshot on a full datastore: %v: %s", err, out)
	}
	if out := qemuIOAt(fill, "write -q -P 1 0 4M", "flush"); out != "" { // an overwrite of allocated blocks
		t.Fatalf("fill's overwrite on a full datastore: %s", out)
	}

	// Deleting s1 merges other's delta down and frees it.
	before := fs.Free()
	if out, code := d.run(t, "snapshot", "rm", "other", "s1"); code != 0 {
		t.Fatalf("snapshot rm on a full datastore: exit %d: %s", code, out)
	}
	t.Logf("snapshot deletion freed %d bytes", fs.Free()-before)
	if out := qemuIOAt(fill, fmt.Sprintf("write -q -P %d %d %d", full+1, full*chunk, chunk), "flush"); out != "" {
		t.Fatalf("the failed write after space was freed: %s", out)
	}
	var cmds []string
	for i := range full + 1 {
		cmds = append(cmds, fmt.Sprintf("read -q -P %d %d %d", i+1, i*chunk, chunk))
	}
	if out := qemuIOAt(fill, cmds...); out != "" {
		t.Fatalf("fill reads back: %s", out)
	}
	if out := qemuIOAt(other, "read -q -P 3 0 8M"); out != "" {
		t.Fatalf("other reads back: %s", out)
	}
	sigterm(t, d)
	ds, err := disk.OpenDatastore(fs.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other", "fill"} {
		dk, err := ds.Open(name)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		if err := dk.Check(); err != nil {
			t.Errorf("check %s: %v", name, err)
		}
		if err := dk.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
