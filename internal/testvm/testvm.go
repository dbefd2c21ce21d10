package testvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/qmp"
)

// KernelDir is where scripts/setup.sh unpacks the Debian kernel: boot/
// holds vmlinuz-VERSION, lib/modules/VERSION its modules.
const KernelDir = "/var/cache/blockwise/kernel"

// Sentinel errors.
var (
	// ErrExit: a guest command exited non-zero; the *ExitError says how.
	ErrExit = errors.New("testvm: guest command failed")
	// ErrGone: QEMU has exited or the shell channel is closed.
	ErrGone = errors.New("testvm: guest gone")
)

// ExitError is a guest command's non-zero exit.
type ExitError struct {
	Cmd    string
	Status int
	Output string
}

// Error implements error.
func (e *ExitError) Error() string {
	return fmt.Sprintf("testvm: %q exited %d: %s", e.Cmd, e.Status, e.Output)
}

// Unwrap makes errors.Is(err, ErrExit) hold.
func (e *ExitError) Unwrap() error { return ErrExit }

// Drive is one virtio-blk disk of the guest. Exactly one of Path and
// NBD is set.
type Drive struct {
	// ID names the drive: its QEMU node name (the format node), device
	// id ID+"-dev" and virtio serial (/sys/block/vdX/serial in the guest).
	// Defaults to "drive0", "drive1"... Guest device names follow the
	// order of Options.Drives: vda, vdb...
	ID string
	// Path is an image file; Format "qcow2" or "raw" (default: qcow2 if
	// the name ends in .qcow2, else raw).
	Path   string
	Format string
	// NBD is an nbd+unix:///EXPORT?socket=PATH URI (raw format on top).
	NBD string
	// ReconnectDelay (seconds, NBD only): QEMU's reconnect-delay, so I/O
	// waits that long for a restarted server instead of failing.
	ReconnectDelay int
	// Discard passes guest discards down (discard=unmap).
	Discard bool
	// DetectZeroes: "", "off", "on" or "unmap".
	DetectZeroes string
	// WError, RError: the device's error policy ("enospc", "stop",
	// "report", "ignore"); empty for QEMU's default.
	WError, RError string
	// ReadOnly opens the image read-only.
	ReadOnly bool
	// Cache "none" sets cache.direct (O_DIRECT); default writeback.
	Cache string
}

// Options configure a guest.
type Options struct {
	Drives []Drive
	// GuestAgent adds qemu-ga to the initramfs and a virtio-serial port
	// org.qemu.guest_agent.0 whose host side is VM.AgentSocket.
	GuestAgent bool
	// MemoryMB of the guest (default 256).
	MemoryMB int
	// Modules beyond the default set (virtio_pci, virtio_blk,
	// virtio_console, ext4, crc32c_generic); dependencies are added.
	Modules []string
	// Binaries are host executables copied (with their libraries) into
	// the guest at the same path. mke2fs (also as mkfs.ext4) always is.
	Binaries []string
	// BootTimeout bounds the boot (default 90 s: the machine is shared).
	BootTimeout time.Duration
	// Accel: "tcg" (default), "kvm", or "kvm:tcg" to try KVM first. On
	// this machine /dev/kvm exists but a KVM guest hangs at boot, hence TCG.
	Accel string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
	// Dir holds the VM's files and sockets; default a new short temp
	// directory, removed at cleanup.
	Dir string
}

// VM is a running guest.
type VM struct {
	t       testing.TB
	opt     Options
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error

	qmpPath, agentPath, shellPath, logPath string

	qmpOnce sync.Once
	qmpc    *qmp.Client
	qmpErr  error

	sh *Shell
}

// Start boots a guest and returns once its shell answers. Everything
// it starts is stopped, and its files removed, when the test ends.
func Start(t testing.TB, opt Options) *VM {
	t.Helper()
	vm, err := start(t, opt)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// Available reports why a guest cannot be booted here ("" when it can):
// qemu-system-x86_64, the kernel or busybox-static missing. Tests skip
// on it only when CI is unset.
func Available() string {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return "qemu-system-x86_64 not installed"
	}
	if _, err := kernel(); err != nil {
		return err.Error()
	}
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		return errNoBusybox.Error()
	}
	return ""
}

// Require skips the test when no guest can be booted, unless CI is
// set, where it fails.
func Require(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("testvm: %s (CI is set)", why)
		}
		t.Skip("testvm: " + why)
	}
}

// KernelCmdline is the guest kernel's command line. no_timer_check: on a
// loaded host TCG's timer can miss the kernel's IO-APIC check, and the
// boot panics ("IO-APIC + timer doesn't work"; TestE2ERecoverGuest under
// CI load); the check only guards against broken real chipsets.
const KernelCmdline = "console=ttyS0 quiet panic=-1 rdinit=/init no_timer_check"

// Kernel returns the path of the guest kernel.
func Kernel() (string, error) {
	k, err := kernel()
	return k[0], err
}

// kernel returns the vmlinuz path and the kernel version.
func kernel() ([2]string, error) {
	m, _ := filepath.Glob(filepath.Join(KernelDir, "boot", "vmlinuz-*"))
	if len(m) == 0 {
		return [2]string{}, fmt.Errorf("testvm: no kernel under %s/boot (run scripts/setup.sh)", KernelDir)
	}
	return [2]string{m[0], strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")}, nil
}

func start(t testing.TB, opt Options) (*VM, error) {
	Require(t)
	if opt.MemoryMB == 0 {
		opt.MemoryMB = 256
	}
	if opt.BootTimeout == 0 {
		opt.BootTimeout = 90 * time.Second
	}
	dir := opt.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "bwvm")
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	vm := &VM{t: t, opt: opt, dir: dir, exited: make(chan struct{}),
		qmpPath: filepath.Join(dir, "qmp.sock"), agentPath: filepath.Join(dir, "qga.sock"),
		shellPath: filepath.Join(dir, "shell.sock"), logPath: filepath.Join(dir, "console.log")}
	k, err := kernel()
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := BuildInitramfs(initrd, opt); err != nil {
		return nil, err
	}
	args, err := vm.qemuArgs(k[0], initrd)
	if err != nil {
		return nil, err
	}
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.Stdout, vm.cmd.Stderr = newTail(), newTail()
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testvm: start qemu: %w", err)
	}
	go func() { vm.waitErr = vm.cmd.Wait(); close(vm.exited) }()
	t.Cleanup(vm.cleanup)
	ctx, cancel := context.WithTimeout(context.Background(), opt.BootTimeout)
	defer cancel()
	if err := vm.connectShell(ctx); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, vm.Diagnostics())
	}
	if _, err := vm.Run(ctx, "true"); err != nil {
		return nil, fmt.Errorf("testvm: boot: %w\n%s", err, vm.Diagnostics())
	}
	return vm, nil
}

// BuildInitramfs writes the guest's initramfs (for a guest started by
// someone else, such as libvirt: boot Kernel() with it and the command
// line KernelCmdline).
func BuildInitramfs(path string, opt Options) error {
	k, err := kernel()
	if err != nil {
		return err
	}
	kver := k[1]
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c := newCpio(f)
	c.file("init", 0o755, []byte(initScript))
	if err := c.hostFile("/usr/bin/busybox"); err != nil {
		return errNoBusybox
	}
	c.symlink("bin/busybox", "/usr/bin/busybox")
	bins := append([]string{"/sbin/mke2fs"}, opt.Binaries...)
	if opt.GuestAgent {
		bins = append(bins, "/usr/sbin/qemu-ga")
	}
	for _, b := range bins {
		if err := c.addBinary(b); err != nil {
			return fmt.Errorf("testvm: copy %s into the guest: %w", b, err)
		}
	}
	c.symlink("sbin/mkfs.ext4", "mke2fs")
	c.hostFile("/etc/mke2fs.conf") // optional: mke2fs has built-in defaults
	modDir := filepath.Join(KernelDir, "lib", "modules", kver)
	want := append([]string{"virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic", "ext4"}, opt.Modules...)
	kos, err := moduleOrder(modDir, want)
	if err != nil {
		return err
	}
	var list strings.Builder
	for _, ko := range kos {
		data, err := os.ReadFile(ko)
		if err != nil {
			return err
		}
		name := "lib/modules/" + filepath.Base(ko)
		c.file(name, 0o644, data)
		list.WriteString("/" + name + "\n")
	}
	c.file("modules.list", 0o644, []byte(list.String()))
	if err := c.close(); err != nil {
		return err
	}
	return f.Close()
}

func (vm *VM) qemuArgs(kernel, initrd string) ([]string, error) {
	accel := []string{"-accel", "tcg"}
	switch vm.opt.Accel {
	case "kvm":
		accel = []string{"-accel", "kvm"}
	case "kvm:tcg":
		accel = []string{"-accel", "kvm", "-accel", "tcg"}
	}
	args := append(accel,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-machine", "q35", "-cpu", "max", "-m", strconv.Itoa(vm.opt.MemoryMB), "-smp", "1",
		"-kernel", kernel, "-initrd", initrd,
		"-append", KernelCmdline,
		"-serial", "file:"+vm.logPath,
		"-qmp", "unix:"+vm.qmpPath+",server=on,wait=off",
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=shell,path="+vm.shellPath+",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=shell,name=org.blockwise.shell")
	if vm.opt.GuestAgent {
		args = append(args,
			"-chardev", "socket,id=qga,path="+vm.agentPath+",server=on,wait=off",
			"-device", "virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0")
	}
	for i := range vm.opt.Drives {
		d := &vm.opt.Drives[i]
		if d.ID == "" {
			d.ID = fmt.Sprintf("drive%d", i)
		}
		bd, err := blockdev(*d)
		if err != nil {
			return nil, err
		}
		dev := "virtio-blk-pci,drive=" + d.ID + ",id=" + d.ID + "-dev,serial=" + d.ID
		if d.WError != "" {
			dev += ",werror=" + d.WError
		}
		if d.RError != "" {
			dev += ",rerror=" + d.RError
		}
		args = append(args, "-blockdev", bd, "-device", dev)
	}
	return append(args, vm.opt.ExtraArgs...), nil
}

// blockdev returns the drive's -blockdev in JSON (paths may hold commas).
func blockdev(d Drive) (string, error) {
	var file map[string]any
	format := d.Format
	switch {
	case d.Path != "" && d.NBD != "":
		return "", fmt.Errorf("testvm: drive %s: both Path and NBD", d.ID)
	case d.Path != "":
		file = map[string]any{"driver": "file", "filename": d.Path}
		if format == "" {
			format = "raw"
			if strings.HasSuffix(d.Path, ".qcow2") {
				format = "qcow2"
			}
		}
	case d.NBD != "":
		nbd, err := nbdURI(d.NBD)
		if err != nil {
			return "", err
		}
		file = nbd
		if d.ReconnectDelay > 0 {
			file["reconnect-delay"] = d.ReconnectDelay
		}
		if format == "" {
			format = "raw"
		}
	default:
		return "", fmt.Errorf("testvm: drive %s: neither Path nor NBD", d.ID)
	}
	node := map[string]any{"driver": format, "node-name": d.ID, "file": file}
	if d.Discard {
		node["discard"] = "unmap"
		file["discard"] = "unmap"
	}
	if d.DetectZeroes != "" {
		node["detect-zeroes"] = d.DetectZeroes
	}
	if d.ReadOnly {
		node["read-only"] = true
		file["read-only"] = true
	}
	if d.Cache == "none" {
		node["cache"] = map[string]any{"direct": true}
		file["cache"] = map[string]any{"direct": true}
	}
	b, err := json.Marshal(node)
	return string(b), err
}

// nbdURI turns nbd+unix:///EXPORT?socket=PATH into an nbd blockdev.
func nbdURI(uri string) (map[string]any, error) {
	rest, ok := strings.CutPrefix(uri, "nbd+unix://")
	if !ok {
		return nil, fmt.Errorf("testvm: %q: only nbd+unix:// URIs", uri)
	}
	path, query, _ := strings.Cut(rest, "?")
	sock, ok := strings.CutPrefix(query, "socket=")
	if !ok || sock == "" {
		return nil, fmt.Errorf("testvm: %q: no socket=", uri)
	}
	m := map[string]any{"driver": "nbd", "server": map[string]any{"type": "unix", "path": sock}}
	if exp := strings.TrimPrefix(path, "/"); exp != "" {
		m["export"] = exp
	}
	return m, nil
}
