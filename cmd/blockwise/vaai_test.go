package main

// End-to-end tests of the VAAI offloads (issue 17) through the CLI, NBD
// and real tools: WRITE_ZEROES with and without NO_HOLE, TRIM, the maps
// nbdinfo and qemu-img read, clones of a disk under writes, reflink on
// XFS and copy_file_range on ext4.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/testfs"
	"github.com/blockwise/blockwise/internal/testvm"
)

// qemuIO runs qemu-io commands on uri (read-only for a snapshot's) and
// fails the test on any output (the commands run with -q).
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	if strings.Contains(uri, "@") {
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, uri)...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("qemu-io %v: %v: %s", cmds, err, out)
	}
}

// holes are the [start, end) ranges a map reports as holes reading zero.
type holes [][2]int64

// nbdinfoHoles reads `nbdinfo --map --json` of uri.
func nbdinfoHoles(t *testing.T, uri string) holes {
	t.Helper()
	out, err := exec.Command("nbdinfo", "--map", "--json", uri).Output()
	if err != nil {
		t.Fatalf("nbdinfo --map: %v", err)
	}
	var ext []struct {
		Offset, Length int64
		Type           int
	}
	if err := json.Unmarshal(out, &ext); err != nil {
		t.Fatalf("nbdinfo --map --json: %v: %s", err, out)
	}
	var h holes
	for _, e := range ext {
		if e.Type == 3 {
			h = h.add(e.Offset, e.Offset+e.Length)
		}
	}
	return h
}

// qemuImgHoles reads `qemu-img map --output=json` of uri.
func qemuImgHoles(t *testing.T, uri string) holes {
	t.Helper()
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "raw", uri).Output()
	if err != nil {
		t.Fatalf("qemu-img map: %v", err)
	}
	var ext []struct {
		Start, Length int64
		Zero, Data    bool
	}
	if err := json.Unmarshal(out, &ext); err != nil {
		t.Fatalf("qemu-img map: %v: %s", err, out)
	}
	var h holes
	for _, e := range ext {
		if e.Zero && !e.Data {
			h = h.add(e.Start, e.Start+e.Length)
		}
	}
	return h
}

func (h holes) add(a, b int64) holes {
	if k := len(h); k > 0 && h[k-1][1] == a {
		h[k-1][1] = b
		return h
	}
	return append(h, [2]int64{a, b})
}

func (h holes) covers(a, b int64) bool {
	for _, r := range h {
		if r[0] <= a && b <= r[1] {
			return true
		}
	}
	return false
}

func (h holes) String() string { return fmt.Sprint([][2]int64(h)) }

// diskJSON is `disk show NAME --json`.
func diskJSON(t *testing.T, c *serveProc, name string) client.Disk {
	t.Helper()
	var d client.Disk
	c.jsonOut(t, &d, "disk", "show", name)
	return d
}

// TestVAAIZeroAndTrimThroughNBD: qemu-io's `write -z` (NO_HOLE: the
// space stays), `write -z -u` (may unmap) and `discard` on a flat disk
// and over a snapshot; nbdinfo --map and qemu-img map agree on the holes
// before and after, the unmapped ranges are holes, `disk show` counts the
// space, the snapshot keeps its data, and CBT reports every zeroed range.
func TestVAAIZeroAndTrimThroughNBD(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "nbdinfo")
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "16M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	agree := func(uri string) holes {
		t.Helper()
		a, b := nbdinfoHoles(t, uri), qemuImgHoles(t, uri)
		if a.String() != b.String() {
			t.Fatalf("holes: nbdinfo %v, qemu-img %v", a, b)
		}
		return a
	}
	if h := agree(uri); !h.covers(0, 16<<20) {
		t.Fatalf("new thin disk is not one hole: %v", h)
	}
	const M = 1 << 20
	qemuIO(t, uri, "write -q -P 1 0 16M", "flush")
	if h := agree(uri); len(h) != 0 {
		t.Fatalf("written disk has holes: %v", h)
	}
	qemuIO(t, uri, "write -q -z 0 1M", "write -q -z -u 2M 1M", "discard -q 4M 1M", "flush")
	h := agree(uri)
	if !h.covers(2*M, 3*M) || !h.covers(4*M, 5*M) || h.covers(1*M, 2*M) {
		t.Fatalf("holes after zeroing: %v", h)
	}
	// 14 MiB: the NO_HOLE range keeps its space, the others give it back
	// (the file system may add a block of its own metadata).
	if got := diskJSON(t, d, "vm").Allocated; got < 14*M || got > 14*M+64<<10 {
		t.Fatalf("allocated %d after NO_HOLE zero of 1M and 2M unmapped, want 14 MiB", got)
	}
	qemuIO(t, uri, "read -q -P 0 0 1M", "read -q -P 1 1M 1M", "read -q -P 0 2M 1M", "read -q -P 0 4M 1M")

	// Over a snapshot: zeroes hide its data in the delta, never touch it.
	var s1 client.Snapshot
	d.jsonOut(t, &s1, "snapshot", "create", "vm", "s1")
	qemuIO(t, uri, "write -q -z 6M 1M", "write -q -z -u 8M 1M", "discard -q 10M 1M", "write -q -z -u 12M 4096", "discard -q 14M 512", "flush")
	h = agree(uri)
	for _, r := range [][2]int64{{8 * M, 9 * M}, {10 * M, 11 * M}, {12 * M, 12*M + 4096}} {
		if !h.covers(r[0], r[1]) {
			t.Fatalf("%v is not a hole over the snapshot: %v", r, h)
		}
	}
	if h.covers(6*M, 7*M) {
		t.Fatalf("NO_HOLE range is a hole: %v", h)
	}
	qemuIO(t, uri, "read -q -P 0 6M 1M", "read -q -P 0 8M 1M", "read -q -P 0 10M 1M", "read -q -P 0 12M 4096", "read -q -P 0 14M 512", "read -q -P 1 14680576 512")
	snapURI := strings.TrimSpace(d.must(t, "export", "vm@s1"))
	qemuIO(t, snapURI, "read -q -P 1 6M 1M", "read -q -P 1 8M 1M", "read -q -P 1 10M 1M", "read -q -P 1 12M 4096")
	if sh := agree(snapURI); sh.covers(6*M, 13*M) {
		t.Fatalf("zeroing the live disk changed the snapshot's map: %v", sh)
	}
	// CBT: every zeroed range changed between s1 and s2.
	d.must(t, "snapshot", "create", "vm", "s2")
	var areas client.ChangedAreas
	d.jsonOut(t, &areas, "changes", "vm", "--snapshot", "s2", "--since", s1.ChangeID)
	changed := holes{}
	for _, a := range areas.ChangedArea {
		changed = changed.add(a.Start, a.Start+a.Length)
	}
	for _, r := range [][2]int64{{6 * M, 7 * M}, {8 * M, 9 * M}, {10 * M, 11 * M}, {12 * M, 12*M + 4096}, {14 * M, 14*M + 512}} {
		if !changed.covers(r[0], r[1]) {
			t.Fatalf("CBT missed zeroed range %v: %v", r, changed)
		}
	}
	if out := d.must(t, "disk", "show", "vm"); !strings.Contains(out, "provisioned") || !strings.Contains(out, "unique") {
		t.Fatalf("disk show: %s", out)
	}
}

// qemuImgCompare runs `qemu-img compare` of two raw images or NBD URIs:
// nil when identical.
func qemuImgCompare(a, b string) error {
	out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestVAAICloneUnderWrites: full and linked clones of a snapshot of a
// disk that qemu-io keeps writing are bit-identical to the snapshot
// (qemu-img compare), have their own UUID and CBT, take no writes of the
// source; a linked clone outlives its snapshot's consolidation and the
// deletion of its source disk (layers kept until the last user).
func TestVAAICloneUnderWrites(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "32M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	qemuIO(t, uri, "write -q -P 0x11 0 8M", "write -q -P 0x22 12M 4M", "write -q -z 13M 64k", "write -q -P 0x33 30M 2M", "flush")
	d.must(t, "snapshot", "create", "vm", "s1")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the guest keeps writing
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			exec.Command("qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -q -P %d %dM 1M", 0x40+i%64, i%32), "-c", "flush", uri).Run()
		}
	}()
	var full, linked client.CloneResult
	d.jsonOut(t, &full, "disk", "clone", "vm@s1", "full")
	d.jsonOut(t, &linked, "disk", "clone", "vm@s1", "lnk", "--linked")
	d.must(t, "disk", "clone", "vm", "now") // a temporary snapshot of the live disk
	close(stop)
	wg.Wait()
	snapURI := strings.TrimSpace(d.must(t, "export", "vm@s1"))
	ref := filepath.Join(t.TempDir(), "s1.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", snapURI, ref).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	src := diskJSON(t, d, "vm")
	for _, c := range []client.CloneResult{full, linked} {
		if c.Disk.UUID == src.UUID || c.Disk.ChangeID == "" || strings.Split(c.Disk.ChangeID, "/")[0] == strings.Split(src.ChangeID, "/")[0] {
			t.Fatalf("clone %s shares identity with its source: %+v vs %+v", c.Disk.Name, c.Disk, src)
		}
		if err := qemuImgCompare(strings.TrimSpace(d.must(t, "export", c.Disk.Name)), snapURI); err != nil {
			t.Fatalf("clone %s differs from vm@s1: %v", c.Disk.Name, err)
		}
	}
	if linked.Disk.Shared == 0 || full.Disk.Shared != 0 {
		t.Fatalf("shared bytes: linked %d, full %d", linked.Disk.Shared, full.Disk.Shared)
	}
	if len(d.must(t, "snapshot", "list", "vm")) == 0 || strings.Contains(d.must(t, "snapshot", "list", "vm"), "clone-now") {
		t.Fatal("the full clone of the live disk left its temporary snapshot")
	}
	// Writes to a clone stay in it.
	lnkURI := strings.TrimSpace(d.must(t, "export", "lnk"))
	qemuIO(t, lnkURI, "write -q -P 0x99 0 1M", "flush")
	if err := qemuImgCompare(ref, snapURI); err != nil {
		t.Fatalf("writing the linked clone changed its source snapshot: %v", err)
	}
	qemuIO(t, lnkURI, "write -q -P 0x11 0 1M", "flush") // as the snapshot again
	// Consolidating s1 and deleting vm keep what lnk uses.
	d.must(t, "snapshot", "rm", "vm", "s1")
	if err := qemuImgCompare(ref, lnkURI); err != nil {
		t.Fatalf("linked clone changed when its snapshot was consolidated: %v", err)
	}
	d.must(t, "disk", "rm", "vm")
	if err := qemuImgCompare(ref, lnkURI); err != nil {
		t.Fatalf("linked clone changed when its source disk was deleted: %v", err)
	}
	if err := qemuImgCompare(ref, strings.TrimSpace(d.must(t, "export", "full"))); err != nil {
		t.Fatalf("full clone changed: %v", err)
	}
}

// cloneOn runs `blockwise serve` on a loop file system of type fstype,
// writes 24 MiB into a 64 MiB disk, snapshots and fully clones it; it
// returns the server, the clone's result and the host's offloads.
func cloneOn(t *testing.T, fstype string, mkfsArgs ...string) (*serveProc, *testfs.Loop, client.CloneResult, *client.HostInfo) {
	t.Helper()
	needTools(t, "qemu-io", "qemu-img")
	fs := testfs.NewLoop(t, fstype, 512<<20, mkfsArgs...)
	d := startServeIn(t, fs.Dir)
	d.must(t, "disk", "create", "vm", "--size", "64M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	qemuIO(t, uri, "write -q -P 0x5a 0 16M", "write -q -P 0xa5 40M 8M", "flush")
	d.must(t, "snapshot", "create", "vm", "s1")
	var res client.CloneResult
	d.jsonOut(t, &res, "disk", "clone", "vm@s1", "c")
	c, err := client.New("unix://"+filepath.Join(fs.Dir, "api.sock"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Host(t.Context())
	if err != nil || info.Offload == nil {
		t.Fatalf("host info: %+v %v", info, err)
	}
	if err := qemuImgCompare(strings.TrimSpace(d.must(t, "export", "c")), strings.TrimSpace(d.must(t, "export", "vm@s1"))); err != nil {
		t.Fatalf("full clone on %s differs from its snapshot: %v", fstype, err)
	}
	return d, fs, res, info
}

// TestVAAIFullCloneReflinkXFS: on XFS with reflink a full clone shares
// the snapshot's extents (xfs_io fiemap flags them shared; no data is
// copied) and the host advertises reflink.
func TestVAAIFullCloneReflinkXFS(t *testing.T) {
	needTools(t, "xfs_io")
	_, fs, res, info := cloneOn(t, "xfs", "-m", "reflink=1")
	if !info.Offload.Reflink {
		t.Fatal("host on XFS with reflink does not advertise reflink")
	}
	if res.Stats.Reflinked != 24<<20 || res.Stats.Copied != 0 || res.Stats.Written != 0 {
		t.Fatalf("full clone on XFS: %+v, want 24 MiB reflinked and nothing copied", res.Stats)
	}
	out, err := exec.Command("xfs_io", "-c", "fiemap -v", filepath.Join(fs.Dir, "c", "flat.raw")).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_io fiemap: %v: %s", err, out)
	}
	shared := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && strings.HasPrefix(f[4], "0x") {
			var flags int
			fmt.Sscanf(f[4], "0x%x", &flags)
			if flags&0x2000 != 0 { // FIEMAP_EXTENT_SHARED
				shared++
			}
		}
	}
	if shared == 0 {
		t.Fatalf("clone's extents are not shared:\n%s", out)
	}
}

// TestVAAIFullCloneCopyFileRangeExt4: on ext4 (no reflink) a full clone
// falls back to copy_file_range inside the kernel, and the host says it
// cannot reflink.
func TestVAAIFullCloneCopyFileRangeExt4(t *testing.T) {
	_, _, res, info := cloneOn(t, "ext4")
	if info.Offload.Reflink {
		t.Fatal("host on ext4 advertises reflink")
	}
	if res.Stats.Copied != 24<<20 || res.Stats.Reflinked != 0 || res.Stats.Written != 0 {
		t.Fatalf("full clone on ext4: %+v, want 24 MiB by copy_file_range", res.Stats)
	}
}

// TestVAAIProvisionAndReclaimCLI: create --provision reserves space
// (thick disks keep it and refuse reclaim, exit 2); an unknown mode is a
// usage error; reclaim --rate gives back zero-filled space at about the
// rate asked.
func TestVAAIProvisionAndReclaimCLI(t *testing.T) {
	needTools(t, "qemu-io")
	d := startServe(t)
	d.must(t, "disk", "create", "eager", "--size", "32M", "--provision", "eager-zeroed")
	d.must(t, "disk", "create", "lazy", "--size", "32M", "--provision", "lazy-zeroed")
	for _, n := range []string{"eager", "lazy"} {
		if got := diskJSON(t, d, n); got.Allocated < 32<<20 || got.Provision == "thin" {
			t.Fatalf("%s disk: %+v", n, got)
		}
		if out, code := d.run(t, "disk", "reclaim", n); code != exitUsage {
			t.Fatalf("reclaim of a thick disk: exit %d: %s", code, out)
		}
	}
	if out, code := d.run(t, "disk", "create", "x", "--size", "1M", "--provision", "thick"); code != exitUsage {
		t.Fatalf("--provision thick: exit %d: %s", code, out)
	}
	d.must(t, "disk", "create", "thin", "--size", "32M")
	uri := strings.TrimSpace(d.must(t, "export", "thin"))
	qemuIO(t, uri, "write -q -P 0 0 8M", "write -q -P 7 8M 1M", "flush") // literal zeroes
	before := diskJSON(t, d, "thin").Allocated
	start := time.Now()
	d.must(t, "disk", "reclaim", "thin", "--rate", "16", "--wait")
	el := time.Since(start)
	after := diskJSON(t, d, "thin").Allocated
	if after > before-8<<20 {
		t.Fatalf("reclaim: allocated %d → %d", before, after)
	}
	// 9 MiB allocated examined at 16 MiB/s: about 0.56 s.
	if el < 450*time.Millisecond || el > 15*time.Second { // loose above: a loaded machine
		t.Fatalf("reclaim of 9 MiB at 16 MB/s took %v", el)
	}
	qemuIO(t, uri, "read -q -P 0 0 8M", "read -q -P 7 8M 1M")
	if out, code := d.run(t, "disk", "reclaim", "thin", "--rate", "0"); code != exitUsage {
		t.Fatalf("--rate 0: exit %d: %s", code, out)
	}
}

// TestVAAIRestoreToDiskByClone: restore --to-disk on the host that still
// holds the point's disk clones it there and writes only what changed
// since the point (the restored disk reads as the point); once that disk
// is gone, or with --no-clone, every chunk comes from the repository.
func TestVAAIRestoreToDiskByClone(t *testing.T) {
	e := newE2E(t, true)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	s := e.vmPoint(t, 16<<20, 8, 21, ref)
	qemuIO(t, e.uri("vm"), "write -q -P 0x77 2M 256k", "flush") // the disk moves on
	out := e.must(t, "restore", s.ID, "--to-disk", "r1", "--verify")
	if !strings.Contains(out, "by cloning vm") {
		t.Fatalf("restore --to-disk beside its disk did not clone: %s", out)
	}
	var changed int64
	fmt.Sscanf(out[strings.Index(out, "then ")+5:], "%d bytes changed", &changed)
	if changed == 0 || changed > 1<<20 {
		t.Fatalf("restore by clone wrote %d changed bytes: %s", changed, out)
	}
	got := filepath.Join(dir, "got.raw")
	for _, name := range []string{"r1", "r2", "r3"} {
		switch name {
		case "r2":
			if out = e.must(t, "restore", s.ID, "--to-disk", name, "--no-clone"); strings.Contains(out, "cloning") {
				t.Fatalf("--no-clone cloned: %s", out)
			}
		case "r3":
			e.must(t, "disk", "rm", "vm")
			if out = e.must(t, "restore", s.ID, "--to-disk", name); strings.Contains(out, "cloning") {
				t.Fatalf("restore without its disk cloned: %s", out)
			}
		}
		e.reference(t, name, got)
		if err := sameFile(got, ref); err != nil {
			t.Fatalf("disk %s restored: %v", name, err)
		}
	}
}

// TestVAAIGuestFstrim: a real Linux guest on a blockwise disk over NBD
// (discard=unmap) writes a file, deletes it and runs fstrim: the space
// comes back on the host. With a snapshot below, fstrim hides the data
// in the delta without touching the snapshot, and the space comes back
// when the snapshot is deleted (consolidation).
func TestVAAIGuestFstrim(t *testing.T) {
	testvm.Require(t)
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "256M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	vm := testvm.Start(t, testvm.Options{Drives: []testvm.Drive{{NBD: uri, Discard: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(script string) {
		t.Helper()
		if out, err := vm.Run(ctx, "set -e\n"+script); err != nil {
			t.Fatalf("guest: %v: %s\n%s", err, out, vm.Diagnostics())
		}
	}
	alloc := func() int64 { t.Helper(); return diskJSON(t, d, "vm").Allocated }
	run("mkfs.ext4 -q -F /dev/vda\nmount -t ext4 /dev/vda /mnt\ndd if=/dev/urandom of=/mnt/a bs=1M count=48 2>/dev/null\nsync")
	full := alloc()
	if full < 48<<20 {
		t.Fatalf("48 MiB written by the guest, %d allocated", full)
	}
	run("rm /mnt/a\nsync\nfstrim /mnt")
	trimmed := alloc()
	if trimmed > full-40<<20 {
		t.Fatalf("fstrim in the guest freed %d of %d bytes on the host", full-trimmed, full)
	}
	t.Logf("guest fstrim: allocated %d -> %d", full, trimmed)

	run("dd if=/dev/urandom of=/mnt/b bs=1M count=32 2>/dev/null\nsync")
	d.must(t, "snapshot", "create", "vm", "s1")
	withSnap := alloc()
	run("rm /mnt/b\nsync\nfstrim /mnt")
	if got := alloc(); got < withSnap-4<<20 {
		t.Fatalf("fstrim over a snapshot freed the snapshot's space: %d -> %d", withSnap, got)
	}
	snapURI := strings.TrimSpace(d.must(t, "export", "vm@s1"))
	if out, err := exec.Command("qemu-img", "info", "-f", "raw", snapURI).CombinedOutput(); err != nil {
		t.Fatalf("snapshot after fstrim: %v: %s", err, out)
	}
	d.must(t, "snapshot", "rm", "vm", "s1") // waits for the consolidation
	if got := alloc(); got > withSnap-24<<20 {
		t.Fatalf("consolidation after fstrim gave back %d of 32 MiB", withSnap-got)
	}
	run("umount /mnt")
	if err := vm.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestVAAIDiskCopyCLI: `disk copy` moves an extent of a snapshot into
// another disk inside the datastore; a source in another datastore exits
// 10 (offload not supported) with nothing changed, so a script falls back;
// an oversized or misaligned request, or one aimed at a snapshot, is a
// usage error (2).
func TestVAAIDiskCopyCLI(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	d := startServe(t)
	d.must(t, "disk", "create", "src", "--size", "8M")
	d.must(t, "disk", "create", "dst", "--size", "8M")
	qemuIO(t, strings.TrimSpace(d.must(t, "export", "src")), "write -q -P 0x61 0 4M", "flush")
	d.must(t, "snapshot", "create", "src", "s1")
	var res client.CopyResult
	d.jsonOut(t, &res, "disk", "copy", "src@s1", "dst", "--length", "2M", "--source-offset", "1M", "--offset", "4M")
	if res.Length != 2<<20 {
		t.Fatalf("copy: %+v", res)
	}
	dstURI := strings.TrimSpace(d.must(t, "export", "dst"))
	qemuIO(t, dstURI, "read -q -P 0x61 4M 2M", "read -q -P 0 0 4M", "read -q -P 0 6M 2M")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"src", "dst", "--length", "1M", "--source-datastore", "not-this-one"}, exitNotSupported},
		{[]string{"src", "dst", "--length", "32M"}, exitUsage},
		{[]string{"src", "dst", "--length", "1000"}, exitUsage},
		{[]string{"src", "dst@s1", "--length", "1M"}, exitUsage},
		{[]string{"src", "dst", "--length", "1M", "--offset", "8M"}, exitUsage},
		{[]string{"nope", "dst", "--length", "1M"}, exitNotFound},
	} {
		if out, code := d.run(t, append([]string{"disk", "copy"}, c.args...)...); code != c.code {
			t.Errorf("disk copy %v: exit %d, want %d: %s", c.args, code, c.code, out)
		}
	}
	qemuIO(t, dstURI, "read -q -P 0x61 4M 2M", "read -q -P 0 0 4M", "read -q -P 0 6M 2M")
}
