package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testvm"
)

// TestE2ERecoverGuest is instant recovery with a real Linux guest (QEMU,
// TCG): it boots from `serve-point --writable` and writes files; the
// export is restarted as `recover` on the same overlay (QEMU waits with
// reconnect-delay, as the printed -drive line sets); the guest writes
// while the copy runs and after the switch, with no reconnect at the
// switch; then, the file system remounted read-only, the checksums the
// guest takes of its files are those it took when writing them, and the
// checksum of its whole disk taken inside the guest equals the new disk's
// read from the host.
func TestE2ERecoverGuest(t *testing.T) {
	testvm.Require(t)
	needTools(t, "mkfs.ext4", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("recovered\n"), 0o644)
	img := filepath.Join(dir, "fs.raw")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 64<<20)
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	run("mkfs.ext4", "-q", "-F", "-d", src, img)
	e.must(t, "disk", "create", "vm", "--size", "64M")
	run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, e.uri("vm"))
	id := e.backupJSON(t, "vm").ID
	ov, sock := filepath.Join(dir, "ov"), filepath.Join(dir, "g.sock")
	sp := e.startPoint(t, "serve-point", id, "--socket", sock, "--writable", "--overlay", ov)
	vm := testvm.Start(t, testvm.Options{Drives: []testvm.Drive{{NBD: sp.uri, ReconnectDelay: 60, Cache: "none", Discard: true}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	guest := func(script string) string {
		t.Helper()
		out, err := vm.Run(ctx, script)
		if err != nil {
			t.Fatalf("guest: %s: %v: %s\n%s", script, err, out, vm.Diagnostics())
		}
		return out
	}
	sums := guest(`set -e; mount -t ext4 /dev/vda /mnt; cat /mnt/etc/hostname
dd if=/dev/urandom of=/mnt/before bs=64k count=32 2>/dev/null; sync; md5sum /mnt/before`)
	if !strings.HasPrefix(sums, "recovered\n") {
		t.Fatalf("the guest does not see the point's file system: %q", sums)
	}
	if err := sp.stop(); err != nil {
		t.Fatalf("serve-point --writable: %v: %s", err, sp.stderr)
	}
	rc := e.startPoint(t, "recover", id, "--to-disk", "new", "--overlay", ov, "--socket", sock, "--rate-mb", "8")
	sums += guest(`set -e; for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=16 conv=fsync 2>/dev/null; done
rm /mnt/before; dd if=/dev/urandom of=/mnt/before bs=64k count=8 2>/dev/null; sync; md5sum /mnt/f* /mnt/before`)
	line := rc.waitLine(t, "switched to disk new", 3*time.Minute)
	t.Log(line)
	sums += guest(`set -e; dd if=/dev/urandom of=/mnt/after bs=64k count=8 conv=fsync 2>/dev/null; md5sum /mnt/after`)
	check := guest(`set -e; mount -o remount,ro /mnt; echo 3 > /proc/sys/vm/drop_caches
md5sum /mnt/f* /mnt/before /mnt/after; md5sum /dev/vda`)
	lines := strings.Split(strings.TrimSpace(check), "\n")
	want := map[string]string{} // file: the sum of what was last written
	for _, l := range strings.Split(sums, "\n") {
		if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[1], "/mnt/") {
			want[f[1]] = f[0]
		}
	}
	for _, l := range lines[:len(lines)-1] {
		if f := strings.Fields(l); len(f) != 2 || want[f[1]] != f[0] {
			t.Errorf("after the switch the guest reads %q; it wrote %q", l, sums)
		}
	}
	if len(lines)-1 != len(want) || len(want) != 8 {
		t.Errorf("the guest sums %d files, it wrote %d: %q", len(lines)-1, len(want), check)
	}
	devSum := strings.Fields(lines[len(lines)-1])[0]
	host := filepath.Join(dir, "new.raw")
	run("nbdcopy", e.uri("new"), host)
	f, _ := os.Open(host)
	h := md5.New()
	io.Copy(h, f)
	f.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != devSum {
		t.Fatalf("the new disk read from the host (md5 %s) differs from the guest's view of its disk (md5 %s)", got, devSum)
	}
}
