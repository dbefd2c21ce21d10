package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/qmp"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/testvm"
)

// qemuRig is a real guest with a qcow2 data drive (raw writes by dd), a
// qcow2 drive with a mounted ext4 (for freezing), a raw drive (whose
// bitmap cannot persist), the guest agent, a QMP socket for blockwise,
// and a repository.
type qemuRig struct {
	cli
	vm     *testvm.VM
	root   *testing.T // guests belong to the whole test, not a subtest
	dir    string     // images and blockwise's QMP socket
	bwSock string
	drives []testvm.Drive
	serve  *serveProc // a host whose disk "hd" is one of the guest's drives
}

func newQEMURig(t *testing.T) *qemuRig {
	testvm.Require(t)
	needTools(t, "qemu-img", "debugfs")
	dir, err := os.MkdirTemp("", "bwq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &qemuRig{root: t, dir: dir, bwSock: filepath.Join(dir, "bw.sock")}
	for _, img := range []struct{ name, size string }{{"data.qcow2", "64M"}, {"fs.qcow2", "32M"}, {"scratch.raw", "8M"}} {
		format := strings.TrimPrefix(filepath.Ext(img.name), ".")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", format, filepath.Join(dir, img.name), img.size).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	// Two clones of one base image: what they share is stored once.
	base := make([]byte, 4<<20)
	rand.Read(base)
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"clone1.qcow2", "clone2.qcow2"} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base.raw"), "-F", "raw", filepath.Join(dir, c)).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	r.drives = []testvm.Drive{{ID: "data", Path: filepath.Join(dir, "data.qcow2")},
		{ID: "fs", Path: filepath.Join(dir, "fs.qcow2")}, {ID: "scratch", Path: filepath.Join(dir, "scratch.raw")},
		{ID: "clone1", Path: filepath.Join(dir, "clone1.qcow2")}, {ID: "clone2", Path: filepath.Join(dir, "clone2.qcow2")}}
	r.cli = newRepoCLI(t)
	r.serve = startServe(t)
	r.serve.must(t, "disk", "create", "hd", "--size", "32M")
	r.drives = append(r.drives, testvm.Drive{ID: "hd", NBD: "nbd+unix:///hd?socket=" + filepath.Join(r.serve.dir, "nbd.sock")})
	r.boot()
	return r
}

// newRepoCLI creates a repository (cheap key derivation) and returns a
// CLI runner for it, without a host daemon.
func newRepoCLI(t *testing.T) cli {
	repoDir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Init(context.Background(), be, "pw", repo.Options{KDF: repo.KDFParams{Time: 1, Memory: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	rp.Close()
	return cli{env: []string{"BLOCKWISE_REPO=" + repoDir, "BLOCKWISE_PASSWORD=pw", "BLOCKWISE_PASSWORD_FILE="}}
}

// backupSummaries runs `backup SOURCE --json` and returns the summaries
// by disk (the part after the VM's name).
func backupSummaries(t *testing.T, c *cli, src string, flags ...string) map[string]backupSummary {
	t.Helper()
	res := runCLI(t, c.command(nil, append([]string{"backup", src, "--json"}, flags...)...))
	if res.code != 0 {
		t.Fatalf("backup %s: exit %d: %s%s", src, res.code, res.stdout, res.stderr)
	}
	out := map[string]backupSummary{}
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	for dec.More() {
		var s backupSummary
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("backup output: %v: %s", err, res.stdout)
		}
		if _, d, ok := strings.Cut(s.Disk, "/"); ok {
			out[d] = s
		} else {
			out[s.Disk] = s
		}
	}
	return out
}

func (r *qemuRig) boot() {
	os.Remove(r.bwSock)
	r.vm = testvm.Start(r.root, testvm.Options{Drives: r.drives, GuestAgent: true,
		ExtraArgs: []string{"-qmp", "unix:" + r.bwSock + ",server=on,wait=off", "-name", "vm1"}})
}

func (r *qemuRig) guest(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := r.vm.Run(ctx, script)
	if err != nil {
		t.Fatalf("guest: %v\n%s", err, r.vm.Diagnostics())
	}
	return out
}

func (r *qemuRig) qmp(t *testing.T, cmd string, args, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := r.vm.QMP(ctx)
	if err == nil {
		err = c.Execute(ctx, cmd, args, out)
	}
	if err != nil {
		t.Fatalf("qmp %s: %v", cmd, err)
	}
}

func (r *qemuRig) source(params string) string {
	u := "qemu+unix://" + r.bwSock
	if params != "" {
		u += "?" + params
	}
	return u
}

func (r *qemuRig) agentParam() string { return "agent=" + r.vm.AgentSocket() }

// backup runs `backup SOURCE --json` and returns the summaries by drive.
func (r *qemuRig) backup(t *testing.T, src string, flags ...string) map[string]backupSummary {
	t.Helper()
	return backupSummaries(t, &r.cli, src, flags...)
}

// frozenState asks the guest agent whether the guest is frozen.
func (r *qemuRig) frozenState(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := qmp.DialAgent(ctx, r.vm.AgentSocket())
	if err != nil {
		t.Fatalf("guest agent: %v", err)
	}
	defer a.Close()
	var st string
	if err := a.Execute(ctx, "guest-fsfreeze-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// restoreMatches restores the point and compares it with a copy of the
// drive taken now, the VM paused (its writes flushed), with qemu-img
// compare; it returns the restored image.
func (r *qemuRig) restoreMatches(t *testing.T, id, drive string) (restored string) {
	t.Helper()
	return r.restoreMatchesFrom(t, &r.cli, id, drive)
}

// restoreMatchesFrom is restoreMatches from the repository of c.
func (r *qemuRig) restoreMatchesFrom(t *testing.T, c *cli, id, drive string) string {
	t.Helper()
	tmp := t.TempDir()
	ref, got := filepath.Join(tmp, "ref.raw"), filepath.Join(tmp, "restored.raw")
	r.qmp(t, "stop", nil, nil)
	out, err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", r.drivePath(drive), ref).CombinedOutput()
	r.qmp(t, "cont", nil, nil)
	if err != nil {
		t.Fatalf("copy %s: %v: %s", drive, err, out)
	}
	c.must(t, "restore", id, "--to", got)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", ref, got).CombinedOutput(); err != nil {
		t.Fatalf("restore of %s (%s) differs from the drive: %v: %s", drive, id[:12], err, out)
	}
	return got
}

func (r *qemuRig) drivePath(id string) string {
	for _, d := range r.drives {
		if d.ID == id {
			return d.Path
		}
	}
	return ""
}

// TestQEMUSource backs up a running guest's drives through QMP: full,
// incrementals that read exactly what the guest wrote, each restore
// identical to the drive; quiescing through the real guest agent; and
// each chain break answered by a full read of that drive with the reason.
func TestQEMUSource(t *testing.T) {
	r := newQEMURig(t)
	r.guest(t, `set -e
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/vdb
mkdir -p /mnt/fs && mount -t ext4 /dev/vdb /mnt/fs
dd if=/dev/urandom of=/dev/vda bs=1M count=8 conv=fsync 2>/dev/null
dd if=/dev/urandom of=/dev/vdc bs=1M count=2 conv=fsync 2>/dev/null
sync`)
	// Written without a sync: only the freeze makes it reach the drive.
	r.guest(t, `echo "written just before the backup" > /mnt/fs/app.txt`)
	// The QMP source's drives; "hd" is the host disk, backed up through
	// the host.
	src := r.source("drive=data,fs,scratch,clone1,clone2&" + r.agentParam())

	first := r.backup(t, src)
	for _, d := range []string{"data", "fs", "scratch"} {
		s := first[d]
		if s.Mode != "full" || s.Consistency != "application" {
			t.Fatalf("first backup of %s: %+v", d, s)
		}
	}
	if st := r.frozenState(t); st != "thawed" {
		t.Fatalf("guest %s after the backup", st)
	}
	c1, c2 := first["clone1"], first["clone2"]
	if c1.NewBytes < 4<<20 || c2.Read < 4<<20 || c2.NewBytes != 0 {
		t.Fatalf("two clones of one base: clone1 new %d, clone2 read %d new %d (want the shared 4 MiB stored once)", c1.NewBytes, c2.Read, c2.NewBytes)
	}
	r.restoreMatches(t, first["data"].ID, "data")
	r.restoreMatches(t, c2.ID, "clone2")
	fsImg := filepath.Join(t.TempDir(), "fs.raw")
	r.must(t, "restore", first["fs"].ID, "--to", fsImg)
	if got, err := exec.Command("debugfs", "-R", "cat /app.txt", fsImg).Output(); err != nil || string(got) != "written just before the backup\n" {
		t.Fatalf("application-consistent point lacks the file written before it: %q, %v", got, err)
	}

	t.Run("host disk quiesced through the guest agent", func(t *testing.T) {
		dev := strings.TrimSpace(r.guest(t, `for d in /sys/block/vd*; do [ "$(cat $d/serial)" = hd ] && echo ${d##*/}; done`))
		r.guest(t, fmt.Sprintf(`set -e
mkfs.ext4 -q -F /dev/%s && mkdir -p /mnt/hd && mount -t ext4 /dev/%s /mnt/hd
echo "host disk, not synced" > /mnt/hd/app.txt`, dev, dev))
		hc := cli{dir: r.serve.dir, env: r.env}
		// --agent overrides the disk's property (here a socket that is
		// not there); then the property alone quiesces.
		r.serve.must(t, "disk", "set", "hd", "--agent", filepath.Join(r.dir, "no-such-agent.sock"))
		if s := backupSummaries(t, &hc, "hd", "--agent", r.vm.AgentSocket())["hd"]; s.Consistency != "application" {
			t.Fatalf("host disk backup with --agent: %+v", s)
		}
		r.serve.must(t, "disk", "set", "hd", "--agent", r.vm.AgentSocket())
		var d struct{ Agent string }
		if r.serve.jsonOut(t, &d, "disk", "info", "hd"); d.Agent != r.vm.AgentSocket() {
			t.Fatalf("disk info after disk set --agent: %+v", d)
		}
		s := backupSummaries(t, &hc, "hd")["hd"]
		if s.Consistency != "application" {
			t.Fatalf("host disk backup through its agent property: %+v", s)
		}
		img := filepath.Join(t.TempDir(), "hd.raw")
		hc.must(t, "restore", s.ID, "--to", img)
		if got, err := exec.Command("debugfs", "-R", "cat /app.txt", img).Output(); err != nil || string(got) != "host disk, not synced\n" {
			t.Fatalf("the quiesced host disk point lacks the file: %q, %v", got, err)
		}
		if st := r.frozenState(t); st != "thawed" {
			t.Fatalf("guest %s", st)
		}
		r.guest(t, "umount /mnt/hd")
	})

	t.Run("incremental reads what the guest wrote", func(t *testing.T) {
		for i, blk := range []int{3, 40, 700} { // 64 KiB blocks
			r.guest(t, fmt.Sprintf("dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=%d conv=fsync 2>/dev/null", blk))
			_ = i
		}
		s := r.backup(t, src)["data"]
		if s.Mode != "incremental" || s.Changed != 3*64<<10 || s.Read != 3*64<<10 {
			t.Fatalf("incremental after 3 written blocks: %+v", s)
		}
		r.restoreMatches(t, s.ID, "data")
		metrics := filepath.Join(t.TempDir(), "bw.prom")
		s = r.backup(t, src, "--metrics-file", metrics)["data"]
		if s.Mode != "incremental" || s.Read != 0 {
			t.Fatalf("incremental with nothing written: %+v", s)
		}
		prom, err := os.ReadFile(metrics)
		for _, want := range []string{`blockwise_backup_incremental{disk="vm1/data"} 1`, `blockwise_backup_success{disk="vm1/clone2"} 1`} {
			if err != nil || !strings.Contains(string(prom), want) {
				t.Fatalf("metrics file lacks %s: %v\n%s", want, err, prom)
			}
		}
	})

	t.Run("bitmap removed by hand", func(t *testing.T) {
		for _, b := range r.ownedBitmaps(t, "data") {
			r.qmp(t, "block-dirty-bitmap-remove", map[string]any{"node": "data", "name": b}, nil)
		}
		got := r.backup(t, src)
		if s := got["data"]; s.Mode != "full" || !strings.Contains(s.Reason, "missing") {
			t.Fatalf("after removing the bitmap: %+v", s)
		}
		if s := got["fs"]; s.Mode != "incremental" {
			t.Fatalf("the other drive's chain must not break: %+v", s)
		}
		if s := r.backup(t, src)["data"]; s.Mode != "incremental" {
			t.Fatalf("the chain must start again: %+v", s)
		}
	})

	t.Run("drive resized", func(t *testing.T) {
		r.qmp(t, "block_resize", map[string]any{"node-name": "data", "size": 80 << 20}, nil)
		r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=4 seek=1200 conv=fsync 2>/dev/null || true")
		s := r.backup(t, src)["data"]
		if s.Mode != "full" || !strings.Contains(s.Reason, "resized") {
			t.Fatalf("after a resize: %+v", s)
		}
		r.restoreMatches(t, s.ID, "data")
	})

	t.Run("backup killed after its views: the next run cleans up and misses nothing", func(t *testing.T) {
		scratch := t.TempDir()
		before := len(r.pointsOf(t, "vm1/data"))
		r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=10 conv=fsync 2>/dev/null")
		out, code := r.run(t, "backup", src, "--scratch-dir", scratch, "--post-thaw", "kill -9 $PPID")
		if code == 0 {
			t.Fatalf("the backup was not killed: %s", out)
		}
		if n := len(r.pointsOf(t, "vm1/data")); n != before {
			t.Fatalf("a killed backup committed a point: %d points, was %d", n, before)
		}
		if left, _ := filepath.Glob(filepath.Join(scratch, "blockwise-fleece-*")); len(left) == 0 {
			t.Fatalf("the killed run left no view behind: the test proves nothing")
		}
		r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=20 conv=fsync 2>/dev/null")
		s := r.backup(t, src, "--scratch-dir", scratch)["data"]
		if s.Mode != "incremental" || s.Changed != 2*64<<10 {
			t.Fatalf("after a killed run: %+v", s)
		}
		if left, _ := filepath.Glob(filepath.Join(scratch, "blockwise-*")); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
		for _, n := range r.nodeNames(t) {
			if strings.HasPrefix(n, "bwfl-") {
				t.Fatalf("fleecing node %s left in QEMU", n)
			}
		}
		r.restoreMatches(t, s.ID, "data")
	})

	t.Run("restore into the running VM's drive", func(t *testing.T) { testRestoreIntoVM(t, r) })

	t.Run("restore into the drive SIGKILLed: the next run recovers", func(t *testing.T) { testRestoreKilled(t, r) })

	t.Run("quiescing", func(t *testing.T) { testQuiescing(t, r) })

	t.Run("VM restarted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		if err := r.vm.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("shutdown took %v", time.Since(start))
		r.boot()
		got := r.backup(t, src)
		if s := got["data"]; s.Mode != "incremental" {
			t.Fatalf("qcow2 drive after a clean restart (its bitmap persists): %+v", s)
		}
		if s := got["scratch"]; s.Mode != "full" || !strings.Contains(s.Reason, "missing") {
			t.Fatalf("raw drive after a restart (its bitmap cannot persist): %+v", s)
		}
		r.restoreMatches(t, got["data"].ID, "data")
	})

	t.Run("policy run by the host", func(t *testing.T) { testPolicySource(t, r) })

	t.Run("QEMU killed", func(t *testing.T) {
		if os.Getenv("BLOCKWISE_LONG") == "" {
			t.Skip("a third guest boot: BLOCKWISE_LONG=1")
		}
		r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=2 seek=77 conv=fsync 2>/dev/null")
		r.vm.Kill()
		r.boot()
		got := r.backup(t, src)
		if s := got["data"]; s.Mode != "full" || !strings.Contains(s.Reason, "inconsistent") {
			t.Fatalf("after SIGKILL of QEMU: %+v", s)
		}
		r.restoreMatches(t, got["data"].ID, "data")
		if s := r.backup(t, src)["data"]; s.Mode != "incremental" {
			t.Fatalf("chain after the restart: %+v", s)
		}
	})
}

func (r *qemuRig) pointsOf(t *testing.T, disk string) []backupRow {
	var rows []backupRow
	r.jsonOut(t, &rows, "points", "--disk", disk)
	return rows
}

func (r *qemuRig) nodeNames(t *testing.T) []string {
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	r.qmp(t, "query-named-block-nodes", map[string]any{"flat": true}, &nodes)
	var out []string
	for _, n := range nodes {
		out = append(out, n.NodeName)
	}
	return out
}

func (r *qemuRig) ownedBitmaps(t *testing.T, node string) []string {
	var nodes []struct {
		NodeName string `json:"node-name"`
		Bitmaps  []struct {
			Name string `json:"name"`
		} `json:"dirty-bitmaps"`
	}
	r.qmp(t, "query-named-block-nodes", map[string]any{"flat": true}, &nodes)
	var out []string
	for _, n := range nodes {
		for _, b := range n.Bitmaps {
			if n.NodeName == node && strings.HasPrefix(b.Name, "blockwise-") {
				out = append(out, b.Name)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no blockwise bitmap on %s", node)
	}
	return out
}

func testQuiescing(t *testing.T, r *qemuRig) {
	noAgent := r.source("drive=fs")
	t.Run("no agent: try falls back to crash", func(t *testing.T) {
		s := r.backup(t, noAgent)["fs"]
		if s.Consistency != "crash" || !strings.Contains(s.ConsistencyReason, "no guest agent") {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("no agent: require fails", func(t *testing.T) {
		out, code := r.run(t, "backup", noAgent, "--quiesce", "require")
		if code != exitFailure || !strings.Contains(out, "quiesce required") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	t.Run("pre-freeze hook fails", func(t *testing.T) {
		s := r.backup(t, r.source("drive=fs&"+r.agentParam()), "--pre-freeze", "echo no >&2; exit 3")["fs"]
		if s.Consistency != "crash" || !strings.Contains(s.ConsistencyReason, "pre-freeze") {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("agent hung", func(t *testing.T) {
		r.guest(t, "kill -STOP $(cat /run/qga.pid)")
		src := r.source("drive=fs&" + r.agentParam())
		s := r.backup(t, src, "--quiesce-timeout", "1s")["fs"]
		out, code := r.run(t, "backup", src, "--quiesce", "require", "--quiesce-timeout", "1s")
		r.guest(t, "kill -CONT $(cat /run/qga.pid)")
		if s.Consistency != "crash" || !strings.Contains(s.ConsistencyReason, "guest agent") {
			t.Fatalf("try with a hung agent: %+v", s)
		}
		if code != exitFailure {
			t.Fatalf("require with a hung agent: exit %d: %s", code, out)
		}
		if st := r.frozenState(t); st != "thawed" {
			t.Fatalf("guest %s after a hung agent", st)
		}
	})
	t.Run("a freeze left behind is thawed by the next run", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a, err := qmp.DialAgent(ctx, r.vm.AgentSocket())
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = a.Execute(ctx, "guest-fsfreeze-freeze", nil, &n)
		a.Close()
		if err != nil || n == 0 {
			t.Fatalf("freeze: %d, %v", n, err)
		}
		s := r.backup(t, r.source("drive=fs&"+r.agentParam()))["fs"]
		if s.Consistency != "application" || !strings.Contains(s.ConsistencyReason, "left by an earlier run") {
			t.Fatalf("%+v", s)
		}
		if st := r.frozenState(t); st != "thawed" {
			t.Fatalf("guest %s", st)
		}
	})
	t.Run("SIGKILL inside the window: the next run thaws", func(t *testing.T) {
		out := runQuiesceChild(t, "kill", r.vm.AgentSocket())
		if !strings.Contains(out, "frozen") || strings.Contains(out, "returned") {
			t.Fatalf("child: %s", out)
		}
		if st := r.frozenState(t); st != "frozen" {
			t.Fatalf("the killed child left the guest %s (it never froze?)", st)
		}
		s := r.backup(t, r.source("drive=fs&"+r.agentParam()))["fs"]
		if s.Consistency != "application" || !strings.Contains(s.ConsistencyReason, "left by an earlier run") {
			t.Fatalf("%+v", s)
		}
		if st := r.frozenState(t); st != "thawed" {
			t.Fatalf("guest %s", st)
		}
	})
	t.Run("SIGTERM inside the window thaws", func(t *testing.T) {
		out := runQuiesceChild(t, "term", r.vm.AgentSocket())
		if !strings.Contains(out, "frozen") || !strings.Contains(out, "returned: context canceled") {
			t.Fatalf("child: %s", out)
		}
		if st := r.frozenState(t); st != "thawed" {
			t.Fatalf("guest %s after SIGTERM inside the window", st)
		}
	})
	t.Run("window timeout thaws and says crash", func(t *testing.T) {
		ctx := context.Background()
		o := quiesce.Options{Policy: quiesce.Try, Timeout: time.Second, Connect: func(ctx context.Context) (quiesce.Freezer, error) {
			return quiesce.DialAgent(ctx, r.vm.AgentSocket())
		}}
		var write time.Duration
		res, err := quiesce.Run(ctx, o, func(ctx context.Context) error {
			time.Sleep(2 * time.Second)
			// A write to a frozen file system blocks until the thaw.
			start := time.Now()
			r.guest(t, "echo probe > /mnt/fs/probe")
			write = time.Since(start)
			return nil
		})
		if err != nil || res.Consistency != "crash" || !strings.Contains(res.Reason, "freeze window") || write > time.Second {
			t.Fatalf("result %+v, %v; a write after the window took %v", res, err, write)
		}
	})
	t.Run("points shows consistency", func(t *testing.T) {
		var rows []backupRow
		r.jsonOut(t, &rows, "points", "--disk", "vm1/fs")
		seen := map[string]bool{}
		for _, row := range rows {
			seen[row.Consistency] = true
		}
		if !seen["application"] || !seen["crash"] {
			t.Fatalf("points: %+v", rows)
		}
		if out := r.must(t, "points", "--disk", "vm1/fs"); !strings.Contains(out, "CONSISTENCY") || !strings.Contains(out, "application") {
			t.Fatalf("points table: %s", out)
		}
	})
}

// vmJobSummary is a hypervisor source's job summary: the drives' added
// up, and each drive's.
type vmJobSummary struct {
	backupSummary
	Drives []backupSummary `json:"drives"`
}

// testPolicySource: a policy with the VM's QMP URI as its source, run
// by the host (policy run --wait) into its own repository: the first
// run is full and application-consistent (--quiesce require through the
// URI's agent), the second reads only the blocks the guest wrote, and
// its point restores to the drive's bytes (qemu-img compare).
func testPolicySource(t *testing.T, r *qemuRig) {
	// require needs a file system to freeze (after "VM restarted" none
	// is mounted).
	r.guest(t, "grep -q ' /mnt/fs ' /proc/mounts || { mkdir -p /mnt/fs && mount -t ext4 /dev/vdb /mnt/fs; }")
	pc := newRepoCLI(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("pw\n"), 0o600)
	src := r.source("drive=data&" + r.agentParam())
	repoDir := strings.TrimPrefix(pc.env[0], "BLOCKWISE_REPO=")
	r.serve.must(t, "policy", "create", "vm1", "--source", src, "--schedule", "@yearly", "--repo", repoDir,
		"--password-file", pw, "--quiesce", "require", "--quiesce-timeout", "20s", "--keep-last", "5")
	if show := r.serve.must(t, "policy", "show", "vm1"); !strings.Contains(show, src) || !strings.Contains(show, "quiesce require, at most 20s") {
		t.Fatalf("policy show: %s", show)
	}
	// The data drive's summary of one run (main's drive= also picks the
	// drives after the last one named; the qemu branch fixes that).
	run := func() backupSummary {
		t.Helper()
		var ended []client.Job
		r.serve.jsonOut(t, &ended, "policy", "run", "vm1", "--wait")
		var s vmJobSummary
		if len(ended) == 1 && ended[0].Source == src && json.Unmarshal(ended[0].Summary, &s) == nil {
			for _, d := range s.Drives {
				if d.Disk == "vm1/data" {
					return d
				}
			}
		}
		t.Fatalf("policy run: %+v", ended)
		return backupSummary{}
	}
	if d := run(); d.Mode != "full" || d.Consistency != "application" {
		t.Fatalf("first run: %+v", d)
	}
	r.guest(t, "dd if=/dev/urandom of=/dev/vda bs=64k count=4 seek=300 conv=fsync 2>/dev/null")
	second := run()
	if second.Mode != "incremental" || second.Changed != 4*64<<10 || second.Read != 4*64<<10 {
		t.Fatalf("second run read more than the guest wrote (256 KiB): %+v", second)
	}
	r.restoreMatchesFrom(t, &pc, second.ID, "data")
}
