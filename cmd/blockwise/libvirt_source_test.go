package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testvm"
)

// libvirtd is a private libvirtd started by a test: its own mount
// namespace (tmpfs over libvirt's state directories, so it shares
// nothing with another libvirtd), its socket in dir, QEMU run as root
// (qemu.conf) with its logs in files, no cgroups.
type libvirtd struct {
	dir, sock string
	cmd       *exec.Cmd
}

func startLibvirtd(t *testing.T) *libvirtd {
	t.Helper()
	for _, tool := range []string{"libvirtd", "virsh", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (CI is set)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	dir, err := os.MkdirTemp("", "bwlv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.Mkdir(filepath.Join(dir, "sock"), 0o700)
	files := map[string]string{
		"libvirtd.conf": fmt.Sprintf("unix_sock_dir = %q\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n", filepath.Join(dir, "sock")),
		"qemu.conf":     "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\nstdio_handler = \"file\"\ncgroup_controllers = [ ]\n",
		"run.sh": `set -e
for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt/qemu; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
mount --bind "$1/qemu.conf" /etc/libvirt/qemu.conf
exec libvirtd -f "$1/libvirtd.conf" -p "$1/libvirtd.pid"
`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &libvirtd{dir: dir, sock: filepath.Join(dir, "sock", "libvirt-sock")}
	d.cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", filepath.Join(dir, "run.sh"), dir)
	log, _ := os.Create(filepath.Join(dir, "libvirtd.log"))
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	})
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := d.virsh("version"); err == nil {
			return d
		}
		if time.Since(start) > 30*time.Second {
			out, _ := os.ReadFile(filepath.Join(dir, "libvirtd.log"))
			t.Fatalf("libvirtd did not start: %s", out)
		}
	}
}

func (d *libvirtd) uri() string { return "qemu:///system?socket=" + d.sock }

func (d *libvirtd) virsh(args ...string) (string, error) {
	out, err := exec.Command("virsh", append([]string{"-c", d.uri()}, args...)...).CombinedOutput()
	return string(out), err
}

func (d *libvirtd) mustVirsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.virsh(args...)
	if err != nil {
		t.Fatalf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// startDomain defines and starts a persistent TCG domain booting the test kernel with
// the testvm initramfs on a qcow2 disk, with the guest agent channel
// (libvirt connects to it) and the test shell, and waits for the shell.
func (d *libvirtd) startDomain(t *testing.T, name string, imgs ...string) *testvm.Shell {
	t.Helper()
	kernel, err := testvm.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(d.dir, name+".cpio")
	if err := testvm.BuildInitramfs(initrd, testvm.Options{GuestAgent: true}); err != nil {
		t.Fatal(err)
	}
	shellSock := filepath.Join(d.dir, name+"-shell.sock")
	var disks string
	for i, img := range imgs {
		disks += fmt.Sprintf("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vd%c' bus='virtio'/></disk>\n", img, 'a'+i)
	}
	xml := fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
<on_reboot>destroy</on_reboot>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
%s<controller type='virtio-serial' index='0'/>
<channel type='unix'><source mode='bind' path='%s'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
<channel type='unix'><source mode='bind' path='%s'/><target type='virtio' name='org.blockwise.shell'/></channel>
<serial type='file'><source path='%s'/></serial>
<controller type='usb' model='none'/><memballoon model='none'/>
</devices></domain>`, name, kernel, initrd, testvm.KernelCmdline, disks,
		filepath.Join(d.dir, name+"-qga.sock"), shellSock, filepath.Join(d.dir, name+"-console.log"))
	xmlPath := filepath.Join(d.dir, name+".xml")
	os.WriteFile(xmlPath, []byte(xml), 0o644)
	d.mustVirsh(t, "define", xmlPath)
	t.Cleanup(func() { d.virsh("destroy", name); d.virsh("undefine", name, "--checkpoints-metadata") })
	d.mustVirsh(t, "start", name)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sh, err := testvm.DialShell(ctx, shellSock)
	if err == nil {
		_, err = sh.Run(ctx, "true")
	}
	if err != nil {
		con, _ := os.ReadFile(filepath.Join(d.dir, name+"-console.log"))
		t.Fatalf("domain %s: shell: %v\n%s", name, err, con)
	}
	t.Cleanup(func() { sh.Close() })
	return sh
}

// TestLibvirtSource backs up a libvirt domain through checkpoints and a
// pull-mode backup job: full, incremental reading what the guest wrote,
// restores identical to the disk, quiesced through libvirt, and a
// checkpoint deleted by hand answered by a full read with the reason.
func TestLibvirtSource(t *testing.T) {
	if os.Getenv("BLOCKWISE_LONG") == "" {
		t.Skip("libvirtd and one more guest boot (~30-50 s): BLOCKWISE_LONG=1")
	}
	testvm.Require(t)
	needTools(t, "qemu-img")
	d := startLibvirtd(t)
	img, fsImg := filepath.Join(d.dir, "vm1.qcow2"), filepath.Join(d.dir, "vm1-fs.qcow2")
	for _, f := range []string{img, fsImg} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", f, "64M").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	sh := d.startDomain(t, "bwvm1", img, fsImg)
	guest := func(script string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := sh.Run(ctx, script); err != nil {
			t.Fatalf("guest: %v: %s", err, out)
		}
	}
	c := newRepoCLI(t)
	scratch := filepath.Join(d.dir, "scratch")
	os.Mkdir(scratch, 0o755)
	// vda is backed up and written raw (a mounted file system's
	// superblock changes at the thaw, so the drive would not equal the
	// point a moment later); vdb carries the ext4 the agent freezes.
	src := "libvirt:///system?domain=bwvm1&disk=vda&socket=" + d.sock
	flags := []string{"--scratch-dir", scratch}
	running := true
	restoreMatches := func(id string) {
		t.Helper()
		ref, got := filepath.Join(t.TempDir(), "ref.raw"), filepath.Join(t.TempDir(), "got.raw")
		if running {
			d.mustVirsh(t, "suspend", "bwvm1")
		}
		out, err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", img, ref).CombinedOutput()
		if running {
			d.mustVirsh(t, "resume", "bwvm1")
		}
		if err != nil {
			t.Fatalf("copy: %v: %s", err, out)
		}
		c.must(t, "restore", id, "--to", got)
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", ref, got).CombinedOutput(); err != nil {
			t.Fatalf("restore %s differs from the disk: %v: %s", id[:12], err, out)
		}
	}

	guest(`set -e
mkfs.ext4 -q -F /dev/vdb && mkdir -p /mnt/fs && mount -t ext4 /dev/vdb /mnt/fs
dd if=/dev/urandom of=/dev/vda bs=1M count=4 conv=fsync 2>/dev/null`)
	all := backupSummaries(t, &c, src, flags...)
	if len(all) != 1 {
		t.Fatalf("disk=vda backed up %d disks: %v", len(all), all)
	}
	full := all["vda"]
	if full.Mode != "full" || full.Consistency != "application" {
		t.Fatalf("first backup: %+v", full)
	}
	restoreMatches(full.ID)

	guest("dd if=/dev/urandom of=/dev/vda bs=64k count=2 seek=100 conv=fsync 2>/dev/null")
	inc := backupSummaries(t, &c, src, flags...)["vda"]
	if inc.Mode != "incremental" || inc.Changed != 2*64<<10 || inc.Read != 2*64<<10 {
		t.Fatalf("incremental: %+v", inc)
	}
	restoreMatches(inc.ID)
	if cps := d.mustVirsh(t, "checkpoint-list", "bwvm1", "--name"); strings.Count(strings.TrimSpace(cps), "\n") > 1 {
		t.Fatalf("checkpoints pile up: %s", cps)
	}

	// The same domain through qemu+ssh://: a private sshd on loopback in
	// libvirtd's mount namespace is the "remote" host. The job's
	// directory is made there on a tmpfs this process does not see
	// (/var/lib/libvirt), so the NBD export is read only through the
	// ssh -L tunnel: a full, then an incremental.
	if sshd, keys := startSSHD(t, "nsenter", "-t", strconv.Itoa(d.cmd.Process.Pid), "-m", "--"); sshd != "" {
		viaURI := sshd + "/system?domain=bwvm1&disk=vda&socket=" + d.sock + "&keyfile=" +
			filepath.Join(keys, "id") + "&known_hosts=" + filepath.Join(keys, "known_hosts")
		remote := []string{"--scratch-dir", "/var/lib/libvirt"}
		full := backupSummaries(t, &c, viaURI, append(remote, "--full")...)["vda"]
		if full.Mode != "full" || full.Read < 4<<20 {
			t.Fatalf("full through qemu+ssh: %+v", full)
		}
		restoreMatches(full.ID)
		guest("dd if=/dev/urandom of=/dev/vda bs=64k count=1 seek=200 conv=fsync 2>/dev/null")
		viaSSH := backupSummaries(t, &c, viaURI, remote...)["vda"]
		if viaSSH.Mode != "incremental" || viaSSH.Read != 64<<10 {
			t.Fatalf("incremental through qemu+ssh: %+v", viaSSH)
		}
		restoreMatches(viaSSH.ID)
		// Restore into the running domain's disk over qemu+ssh:// too: the
		// overlay is made on the remote host, the NBD socket forwarded.
		guest("dd if=/dev/urandom of=/dev/vda bs=64k count=2 seek=250 conv=fsync 2>/dev/null")
		var into restoredVM
		c.jsonOut(t, &into, append([]string{"restore", full.ID, "--to-uri", viaURI}, remote...)...)
		if into.Partial || !into.RootVerified || !into.Resumed || into.Drive != "bwvm1/vda" {
			t.Fatalf("restore into the domain over qemu+ssh: %+v", into)
		}
		restoreMatches(full.ID)
		if out, err := exec.Command("nsenter", "-t", strconv.Itoa(d.cmd.Process.Pid), "-m", "--", "sh", "-c", "ls -d /var/lib/libvirt/blockwise-* 2>/dev/null").Output(); err == nil && len(out) > 0 {
			t.Fatalf("job directories left on the remote host: %s", out)
		}
	}

	// Restore into one disk (--drive vda) of the running two-disk domain
	// through libvirt (suspend, QMP passthrough, resume): the whole point
	// is written and verified, blockwise's checkpoints go, the next
	// backup says so, and the other disk (vdb, unmounted so the guest
	// leaves it alone) keeps its content.
	guest("umount /mnt/fs && dd if=/dev/urandom of=/dev/vda bs=64k count=3 seek=300 conv=fsync 2>/dev/null")
	backupSummaries(t, &c, src, flags...) // a checkpoint again (a restore over ssh deleted them)
	other := diskCopy(t, d, fsImg)
	var into restoredVM
	c.jsonOut(t, &into, "restore", inc.ID, "--to-uri", "libvirt:///system?domain=bwvm1&socket="+d.sock, "--drive", "vda", "--scratch-dir", scratch)
	if into.Partial || !into.RootVerified || !into.Resumed || len(into.ResetBitmaps) == 0 || into.Drive != "bwvm1/vda" {
		t.Fatalf("restore into the domain: %+v", into)
	}
	if st := d.mustVirsh(t, "domstate", "bwvm1"); !strings.Contains(st, "running") {
		t.Fatalf("domain %s after the restore", st)
	}
	restoreMatches(inc.ID)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", other, diskCopy(t, d, fsImg)).CombinedOutput(); err != nil {
		t.Fatalf("the other disk changed with a restore into vda: %v: %s", err, out)
	}
	if s := backupSummaries(t, &c, src, flags...)["vda"]; s.Mode != "full" || !strings.Contains(s.Reason, "blockwise restore") {
		t.Fatalf("backup after a restore into the disk: %+v", s)
	}

	// A restore into the domain SIGKILLed once its commit job runs: the
	// next backup (libvirt Open, seeing the state file) finishes the
	// commit, resumes the domain, and the disk holds the point.
	guest("dd if=/dev/urandom of=/dev/vda bs=64k count=2 seek=400 conv=fsync 2>/dev/null")
	if out, code := c.runEnv(t, []string{killAtStepEnv + "=committing-job"}, "restore", inc.ID, "--to-uri", src, "--scratch-dir", scratch); code == 0 || !strings.Contains(out, "killed") {
		t.Fatalf("restore not killed: exit %d: %s", code, out)
	}
	if st := d.mustVirsh(t, "domstate", "bwvm1"); !strings.Contains(st, "paused") {
		t.Fatalf("domain %s after the killed restore: the test proves nothing", st)
	}
	res := runCLI(t, c.command(nil, append([]string{"backup", src, "--json"}, flags...)...))
	if res.code != 0 || !strings.Contains(res.stderr, "holds the whole point") || !strings.Contains(res.stderr, "VM resumed") {
		t.Fatalf("recovering backup: exit %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if st := d.mustVirsh(t, "domstate", "bwvm1"); !strings.Contains(st, "running") {
		t.Fatalf("domain %s after the recovery", st)
	}
	restoreMatches(inc.ID)
	if left, _ := filepath.Glob(filepath.Join(scratch, "blockwise-*")); len(left) != 0 {
		t.Fatalf("left in the scratch directory: %v", left)
	}

	for _, cp := range strings.Fields(d.mustVirsh(t, "checkpoint-list", "bwvm1", "--name")) {
		d.mustVirsh(t, "checkpoint-delete", "bwvm1", cp)
	}
	broken := backupSummaries(t, &c, src, flags...)["vda"]
	if broken.Mode != "full" || !strings.Contains(broken.Reason, "missing") {
		t.Fatalf("after deleting the checkpoints: %+v", broken)
	}
	if out := d.mustVirsh(t, "domjobinfo", "bwvm1"); !strings.Contains(out, "None") {
		t.Fatalf("a backup job is still running: %s", out)
	}

	// Shut off: the disk is read from its image through qemu-nbd with the
	// persistent bitmap of the newest checkpoint; a write made while off
	// (qemu-io, which records into the enabled persistent bitmap) is all
	// the incremental reads.
	d.mustVirsh(t, "destroy", "--graceful", "bwvm1") // SIGTERM: QEMU stores its bitmaps
	running = false
	if st := d.mustVirsh(t, "domstate", "bwvm1"); !strings.Contains(st, "shut off") {
		t.Fatalf("domain state %s", st)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 128k", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	off := backupSummaries(t, &c, src, flags...)["vda"]
	if off.Mode != "incremental" || off.Changed != 128<<10 || off.Read != 128<<10 || off.Consistency != "crash" {
		t.Fatalf("incremental of the shut-off domain: %+v", off)
	}
	restoreMatches(off.ID)
	cp := strings.TrimSpace(d.mustVirsh(t, "checkpoint-list", "bwvm1", "--name"))
	if out, err := exec.Command("qemu-img", "bitmap", "--remove", img, cp).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img bitmap --remove %s: %v: %s", cp, err, out)
	}
	offBroken := backupSummaries(t, &c, src, flags...)["vda"]
	if offBroken.Mode != "full" || !strings.Contains(offBroken.Reason, "missing from the image") {
		t.Fatalf("shut off, bitmap removed: %+v", offBroken)
	}
	restoreMatches(offBroken.ID)
}

// diskCopy copies a running domain's disk image to a raw file, the
// domain suspended meanwhile.
func diskCopy(t *testing.T, d *libvirtd, img string) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "copy.raw")
	d.mustVirsh(t, "suspend", "bwvm1")
	out, err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", img, ref).CombinedOutput()
	d.mustVirsh(t, "resume", "bwvm1")
	if err != nil {
		t.Fatalf("copy %s: %v: %s", img, err, out)
	}
	return ref
}

// startSSHD runs a private sshd on a loopback port that accepts root
// with a key made here, and returns qemu+ssh://root@127.0.0.1:PORT and
// the key's directory, or "" (skipping that part) without sshd outside CI.
func startSSHD(t *testing.T, wrap ...string) (uri, keys string) {
	t.Helper()
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("sshd not installed (CI is set): scripts/setup.sh installs openssh-server")
		}
		t.Log("sshd not installed: qemu+ssh part skipped")
		return "", ""
	}
	return runSSHD(t, sshd, wrap...)
}
