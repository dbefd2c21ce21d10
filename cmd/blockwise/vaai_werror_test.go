package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/testfs"
	"github.com/blockwise/blockwise/internal/testvm"
)

// TestWErrorENOSPCPausesGuest: a real guest (qemu-system-x86_64, the
// testvm harness) whose virtio disk is a blockwise NBD export with
// werror=enospc, on a datastore on a 64 MiB ext4 loop file system with
// only ~8 MiB free. The guest writes 24 MiB with O_DIRECT: the host's
// NBD_ENOSPC makes QEMU pause the guest (status io-error, a
// BLOCK_IO_ERROR event with nospace), not fail the write. Space is freed
// (a ballast file removed), `cont` resumes it, the guest's dd finishes,
// and the 24 MiB read back in the guest and over NBD on the host equal
// what the guest wrote; the disk's check is clean.
func TestWErrorENOSPCPausesGuest(t *testing.T) {
	testvm.Require(t)
	fs := testfs.NewLoopFS(t, 64<<20, "ext4")
	d := startServeIn(t, fs.Dir)
	d.must(t, "disk", "create", "vm", "--size", "64M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	ballast := fs.Ballast(8 << 20)
	t.Logf("free with the ballast: %d bytes", fs.Free())

	vm := testvm.Start(t, testvm.Options{Drives: []testvm.Drive{{NBD: uri, WError: "enospc", RError: "report"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sum, err := vm.Run(ctx, "dd if=/dev/urandom of=/tmp/src bs=1M count=24 2>/dev/null && md5sum /tmp/src | cut -d' ' -f1")
	if err != nil {
		t.Fatalf("guest source: %v", err)
	}
	sum = strings.TrimSpace(sum)
	q, err := vm.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type ddResult struct {
		out string
		err error
	}
	dd := make(chan ddResult, 1)
	go func() {
		out, err := vm.Run(ctx, "dd if=/tmp/src of=/dev/vda bs=1M oflag=direct conv=fsync 2>&1")
		dd <- ddResult{out, err}
	}()
	// Paused on the I/O error, waiting for space.
	nospace := false
	for !nospace {
		select {
		case ev := <-q.Events():
			if ev.Name != "BLOCK_IO_ERROR" {
				continue
			}
			var data struct {
				Action  string `json:"action"`
				NoSpace bool   `json:"nospace"`
			}
			json.Unmarshal(ev.Data, &data)
			if data.Action != "stop" || !data.NoSpace {
				t.Fatalf("BLOCK_IO_ERROR %s, want action stop with nospace", ev.Data)
			}
			nospace = true
		case r := <-dd:
			t.Fatalf("the guest's dd ended without a pause: %v: %s", r.err, r.out)
		case <-ctx.Done():
			t.Fatal("no BLOCK_IO_ERROR: the guest was never paused")
		}
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := q.Execute(ctx, "query-status", nil, &st); err != nil || st.Running || st.Status != "io-error" {
		t.Fatalf("query-status after ENOSPC: %+v, %v", st, err)
	}
	time.Sleep(time.Second)
	select {
	case r := <-dd:
		t.Fatalf("the guest's dd returned while paused: %v: %s", r.err, r.out)
	default:
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := q.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatalf("cont: %v", err)
	}
	var r ddResult
	select {
	case r = <-dd:
	case <-ctx.Done():
		t.Fatal("the guest's dd did not finish after cont")
	}
	if r.err != nil {
		t.Fatalf("the guest's dd after cont: %v: %s", r.err, r.out)
	}
	got, err := vm.Run(ctx, "dd if=/dev/vda bs=1M count=24 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1")
	if err != nil || strings.TrimSpace(got) != sum {
		t.Fatalf("guest reads back %q (%v), wrote %q", got, err, sum)
	}
	if err := vm.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 24<<20)
	if err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if h := md5.Sum(buf); hex.EncodeToString(h[:]) != sum {
		t.Fatalf("the host reads %x over NBD, the guest wrote %s", h, sum)
	}
	sigterm(t, d)
	ds, err := disk.OpenDatastore(fs.Dir)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := ds.Open("vm")
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Close()
	if err := dk.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
}
