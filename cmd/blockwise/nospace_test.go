package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/testfs"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// TestFullDatastore: the datastore on a 64 MiB tmpfs, a 256 MiB disk
// written through `blockwise serve` with qemu-io until the datastore is
// full. The client sees ENOSPC (not EIO), overwrites of written blocks
// still work, `snapshot create` exits 9 (API 507 no-space), and once the
// tmpfs is remounted larger the same writes and the snapshot succeed
// without restarting the host. Every flushed write reads back, the
// engine's check passes, and the host starts again cleanly.
func TestFullDatastore(t *testing.T) {
	needTools(t, "qemu-io")
	fs := testfs.NewTmpfs(t, "64m")
	dir := fs.Dir

	d := startServeIn(t, dir)
	d.must(t, "disk", "create", "vm", "--size", "256M")
	uri := strings.TrimSpace(d.must(t, "export", "vm"))
	const chunk = 4 << 20
	qemuIO := func(cmds ...string) string {
		t.Helper()
		args := []string{"-f", "raw"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		out, _ := exec.Command("qemu-io", append(args, uri)...).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	write := func(i int, pat byte) string {
		return qemuIO(fmt.Sprintf("write -q -P %d %d %d", pat, i*chunk, chunk), "flush")
	}
	pat := map[int]byte{} // chunk → pattern of its last flushed write
	full := -1
	for i := range 64 {
		out := write(i, byte(i+1))
		if out != "" {
			if !strings.Contains(out, "No space left on device") {
				t.Fatalf("chunk %d on a full datastore: qemu-io says %q, want ENOSPC", i, out)
			}
			full = i
			break
		}
		pat[i] = byte(i + 1)
	}
	if full < 1 {
		t.Fatalf("full at chunk %d of a 64 MiB datastore", full)
	}
	// The NBD reply itself carries NBD_ENOSPC.
	ctx := context.Background()
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = c.WriteAt(ctx, bytes.Repeat([]byte{9}, chunk), int64(full+1)*chunk, false)
	if we := (*nbd.Error)(nil); !errors.As(err, &we) || we.Code != nbd.ENOSPC {
		t.Fatalf("NBD write on a full datastore: %v, want NBD_ENOSPC", err)
	}
	c.Close()
	// Overwrites of allocated blocks need no space.
	if out := write(0, 0xee); out != "" {
		t.Fatalf("overwrite on a full datastore: %s", out)
	}
	pat[0] = 0xee
	out, code := d.run(t, "snapshot", "create", "vm", "s1")
	if code != exitNoSpace || !strings.Contains(out, "507") {
		t.Fatalf("snapshot create on a full datastore: exit %d, want %d (507): %s", code, exitNoSpace, out)
	}

	// Space freed: the same writes and the snapshot work, no restart.
	fs.Resize("512m")
	for i := full; i < full+4; i++ {
		if out := write(i, byte(i+1)); out != "" {
			t.Fatalf("chunk %d after space was freed: %s", i, out)
		}
		pat[i] = byte(i + 1)
	}
	d.must(t, "snapshot", "create", "vm", "s1")
	if out := write(1, 0xdd); out != "" { // into the new delta
		t.Fatalf("write after the snapshot: %s", out)
	}
	pat[1] = 0xdd
	verify := func(when string) {
		t.Helper()
		var cmds []string
		for i, p := range pat {
			cmds = append(cmds, fmt.Sprintf("read -q -P %d %d %d", p, i*chunk, chunk))
		}
		if out := qemuIO(cmds...); out != "" {
			t.Fatalf("%s: read back: %s", when, out)
		}
	}
	verify("after space was freed")

	// Stopped: the engine's own check passes; started again: it opens
	// cleanly and still holds every flushed write.
	sigterm(t, d)
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := ds.Open("vm")
	if err != nil {
		t.Fatalf("open after the episode: %v", err)
	}
	if err := dk.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := dk.Close(); err != nil {
		t.Fatal(err)
	}
	d = startServeIn(t, dir)
	uri = strings.TrimSpace(d.must(t, "export", "vm"))
	verify("after a restart")
	sigterm(t, d)
}
