package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/metafile"
)

// testRestoreIntoVM restores points into the running guest's data drive
// through QMP: first only what its bitmaps marked since the point, then
// (bitmaps reset by the first) the whole point; each time the drive
// equals the point (qemu-img compare, and a block re-read inside the
// guest), the VM runs again and the next backup is full and says why.
// Then the refusals: a point of another size, no VM, and QEMU's NBD
// server taken by someone else (the VM stays paused).
func testRestoreIntoVM(t *testing.T, r *qemuRig) {
	// Backups here read the data drive only (faster); its chain is its own.
	into := r.source("drive=data&" + r.agentParam())
	p := r.backup(t, into)["data"]
	for i, blk := range []int{5, 600} {
		r.guest(t, fmt.Sprintf("dd if=/dev/urandom of=/dev/vda bs=64k count=%d seek=%d conv=fsync 2>/dev/null", i+1, blk))
	}
	for _, tc := range []struct {
		name    string
		partial bool
		changed int64
		reason  string // of a whole restore
	}{
		{"only what the bitmaps marked", true, 3 * 64 << 10, ""},
		{"whole point after the bitmaps were reset", false, 0, "restored into the drive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.partial && os.Getenv("BLOCKWISE_LONG") == "" {
				// The first restore already made the next backup full.
				t.Skip("a whole restore of the drive (~4 s): BLOCKWISE_LONG=1")
			}
			r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=5 conv=fsync 2>/dev/null")
			var got restoredVM
			r.jsonOut(t, &got, "restore", p.ID, "--to-uri", into)
			if got.Partial != tc.partial || got.ChangedBytes != tc.changed || !got.RootVerified || !got.Resumed ||
				!strings.Contains(got.Reason, tc.reason) || tc.partial && len(got.ResetBitmaps) == 0 {
				t.Fatalf("restore into the VM: %+v", got)
			}
			if st := r.vmStatus(t); st != "running" {
				t.Fatalf("VM %s after the restore", st)
			}
			r.guestBlockMatches(t, r.restoreMatches(t, p.ID, "data"), 5)
			if b := r.ownedBitmaps(t, "data"); len(b) != 1 || !strings.HasPrefix(b[0], "blockwise-restored-") {
				t.Fatalf("bitmaps after the restore: %v (want only the marker)", b)
			}
		})
	}
	if s := r.backup(t, into)["data"]; s.Mode != "full" || !strings.Contains(s.Reason, "restored into the drive") {
		t.Fatalf("backup after a restore into the drive: %+v", s)
	}
	if s := r.backup(t, into)["data"]; s.Mode != "incremental" {
		t.Fatalf("the chain must start again after the full: %+v", s)
	}

	fsPoint := r.pointsOf(t, "vm1/fs")[0].ID
	sock := filepath.Join(t.TempDir(), "other-nbd.sock")
	for _, tc := range []struct {
		name, point, uri, want string
		code                   int
		setup, after           func()
		paused                 bool
	}{
		{name: "point of another size", point: fsPoint, uri: into, want: "size", code: exitUsage},
		{name: "no VM", point: p.ID, uri: "qemu+unix://" + filepath.Join(r.dir, "no-vm.sock"), want: "no QEMU VM", code: exitNotFound},
		{name: "NBD server taken: the VM stays paused", point: p.ID, uri: into, want: "left paused", code: exitBusy, paused: true,
			setup: func() {
				r.qmp(t, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": sock}}}, nil)
			},
			after: func() { r.qmp(t, "nbd-server-stop", nil, nil); r.qmp(t, "cont", nil, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			out, code := r.run(t, "restore", tc.point, "--to-uri", tc.uri)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d (want %d), output lacks %q: %s", code, tc.code, tc.want, out)
			}
			want := map[bool]string{false: "running", true: "paused"}[tc.paused]
			if st := r.vmStatus(t); st != want {
				t.Errorf("VM %s after the failed restore, want %s", st, want)
			}
			if tc.after != nil {
				tc.after()
			}
		})
	}
}

func (r *qemuRig) vmStatus(t *testing.T) string {
	var st struct {
		Status string `json:"status"`
	}
	r.qmp(t, "query-status", nil, &st)
	return st.Status
}

// guestBlockMatches reads 64 KiB block blk of the data drive inside the
// guest, its caches dropped, and compares it with the point's (restored
// to img).
func (r *qemuRig) guestBlockMatches(t *testing.T, img string, blk int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, blk<<16, 1<<16)); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", h.Sum(nil))
	got := r.guest(t, fmt.Sprintf("blockdev --flushbufs /dev/vda; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=64k skip=%d count=1 2>/dev/null | sha256sum", blk))
	if !strings.HasPrefix(got, want) {
		t.Fatalf("block %d read inside the guest: %s, the point's %s", blk, got, want)
	}
}

// testRestoreKilled SIGKILLs `restore --to-uri` at a step
// (killAtStepEnv) and lets the next backup of the VM recover: killed
// before the overlay went over the drive, the drive keeps its old
// content; after the commit started, it holds the whole point; the VM
// runs again only if it ran before; no export, job, overlay node, state
// file or directory stays. Each restore is of the newest point (a
// partial one), the guest having written blocks after it. A finished
// commit is hashed against the point's root the state file recorded:
// with that root altered, the recovery fails (exit 6, root mismatch)
// and leaves the VM paused though it ran before.
func testRestoreKilled(t *testing.T, r *qemuRig) {
	src := r.source("drive=data")
	scratch, err := os.MkdirTemp("", "bwk") // short: QEMU's NBD socket path has a limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(scratch) })
	p := r.backup(t, src, "--quiesce", "off", "--scratch-dir", scratch)["data"]
	for i, tc := range []struct {
		step       string
		wasRunning bool
		point      bool   // the drive must hold the point, else its old content
		says       string // what the recovering run reports
		badRoot    bool   // the state file's root is altered before the recovery
	}{
		{step: "paused", wasRunning: false, says: "keeps its old content"},
		{step: "committing", wasRunning: true, says: "keeps its old content"},
		{step: "committing-job", wasRunning: true, point: true, says: "holds the whole point (the commit was finished; root verified)"},
		{step: "committing-job", wasRunning: true, point: true, says: "the VM is left paused: verify drive data", badRoot: true},
	} {
		t.Run(fmt.Sprintf("%s-badroot=%v", tc.step, tc.badRoot), func(t *testing.T) {
			t.Cleanup(func() { // a failed case must not leave the next one a paused guest
				if r.vmStatus(t) == "paused" {
					r.qmp(t, "cont", nil, nil)
				}
			})
			r.guest(t, fmt.Sprintf("dd if=/dev/urandom of=/dev/vda bs=64k count=2 seek=%d conv=fsync 2>/dev/null", 30+4*i))
			old := r.driveCopy(t, "data")
			if !tc.wasRunning {
				r.qmp(t, "stop", nil, nil)
			}
			out, code := r.runEnv(t, []string{killAtStepEnv + "=" + tc.step}, "restore", p.ID, "--to-uri", src, "--scratch-dir", scratch)
			if code == 0 || !strings.Contains(out, "killed") {
				t.Fatalf("restore not killed at %s: exit %d: %s", tc.step, code, out)
			}
			if st := r.vmStatus(t); st != "paused" {
				t.Fatalf("VM %s after the kill at %s: the test proves nothing", st, tc.step)
			}
			left, _ := filepath.Glob(filepath.Join(scratch, "blockwise-restore-*.state"))
			if len(left) != 1 {
				t.Fatalf("state files after the kill: %v", left)
			}
			if tc.badRoot {
				alterStateRoot(t, left[0])
			}
			res := runCLI(t, r.command(nil, "backup", src, "--json", "--quiesce", "off", "--scratch-dir", scratch))
			if tc.badRoot {
				if res.code != exitCorrupt || !strings.Contains(res.stderr, tc.says) || !strings.Contains(res.stderr, "root") {
					t.Fatalf("recovering backup with the state's root altered: exit %d: %s%s", res.code, res.stdout, res.stderr)
				}
				if st := r.vmStatus(t); st != "paused" {
					t.Fatalf("VM %s after a recovery whose drive failed its verification, want paused", st)
				}
				r.qmp(t, "cont", nil, nil)
				r.noRestoreLeft(t, scratch)
				r.restoreMatches(t, p.ID, "data") // the drive is right: only the recorded root was not
				// The recovery finished the commit before the check failed:
				// the drive's bitmaps were reset, so the next point is full
				// and says why.
				s := r.backup(t, src, "--quiesce", "off", "--scratch-dir", scratch)["data"]
				if s.Mode != "full" || !strings.Contains(s.Reason, "restored into the drive") {
					t.Fatalf("backup after the failed verification: %+v", s)
				}
				p = s
				return
			}
			if res.code != 0 || !strings.Contains(res.stderr, "was recovered") || !strings.Contains(res.stderr, tc.says) {
				t.Fatalf("recovering backup: exit %d: %s%s", res.code, res.stdout, res.stderr)
			}
			want := map[bool]string{false: "paused", true: "running"}[tc.wasRunning]
			if st := r.vmStatus(t); st != want {
				t.Fatalf("VM %s after the recovery, want %s", st, want)
			}
			if !tc.wasRunning {
				r.qmp(t, "cont", nil, nil)
			}
			r.noRestoreLeft(t, scratch)
			if tc.point {
				r.restoreMatches(t, p.ID, "data")
			} else if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", old, r.driveCopy(t, "data")).CombinedOutput(); err != nil {
				t.Fatalf("the drive is not its old content: %v: %s", err, out)
			}
			var s backupSummary
			json.Unmarshal([]byte(res.stdout), &s)
			p = s
		})
	}
}

// alterStateRoot flips a bit of the point's root in a restore's state
// file (framing kept valid), as a drive that is not the point would look.
func alterStateRoot(t *testing.T, name string) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	_, body, err := metafile.Decode(name, "BWINTOST", 1, data)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	root, _ := st["root"].(string)
	if len(root) != 64 {
		t.Fatalf("state file %s records no root: %s", name, body)
	}
	flip := "0"
	if root[0] == '0' {
		flip = "1"
	}
	st["root"] = flip + root[1:]
	body, _ = json.Marshal(st)
	if err := os.WriteFile(name, metafile.Encode("BWINTOST", 1, body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// driveCopy copies a drive to a raw file, the VM paused meanwhile.
func (r *qemuRig) driveCopy(t *testing.T, drive string) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), drive+".raw")
	r.qmp(t, "stop", nil, nil)
	out, err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", r.drivePath(drive), ref).CombinedOutput()
	r.qmp(t, "cont", nil, nil)
	if err != nil {
		t.Fatalf("copy %s: %v: %s", drive, err, out)
	}
	return ref
}

// noRestoreLeft checks that no export, job, restore overlay, state file
// or private directory of a restore is left.
func (r *qemuRig) noRestoreLeft(t *testing.T, scratch string) {
	t.Helper()
	var items []struct {
		ID string `json:"id"`
	}
	for _, q := range []string{"query-block-exports", "query-jobs"} {
		if r.qmp(t, q, nil, &items); len(items) != 0 {
			t.Fatalf("%s after the recovery: %+v", q, items)
		}
	}
	for _, n := range r.nodeNames(t) {
		if strings.HasPrefix(n, "bwro-") {
			t.Fatalf("restore overlay %s left in QEMU", n)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(scratch, "blockwise-*")); len(left) != 0 {
		t.Fatalf("left in the scratch directory: %v", left)
	}
}
