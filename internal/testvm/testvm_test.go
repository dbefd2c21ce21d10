package testvm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/qmp"
)

// TestGuestWritesReachHost boots a guest on a raw drive, makes an ext4
// file system on it inside the guest, writes a file, shuts down, and
// finds the file in the image with debugfs on the host.
func TestGuestWritesReachHost(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vm := Start(t, Options{Drives: []Drive{{Path: img, Discard: true}}, GuestAgent: true})
	t.Logf("boot took %v", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := vm.Run(ctx, "cat /sys/block/vda/serial")
	if err != nil || strings.TrimSpace(out) != "drive0" {
		t.Fatalf("serial of vda: %q, %v", out, err)
	}
	_, err = vm.Run(ctx, "exit 3")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 3 || !errors.Is(err, ErrExit) {
		t.Fatalf("exit 3: %v", err)
	}
	script := `set -e
mkfs.ext4 -q -F /dev/vda
mount -t ext4 /dev/vda /mnt
echo "hello from the guest" > /mnt/hello.txt
sync
cat /mnt/hello.txt`
	if out, err := vm.Run(ctx, script); err != nil || out != "hello from the guest\n" {
		t.Fatalf("guest script: %q, %v", out, err)
	}
	ag, err := qmp.DialAgent(ctx, vm.AgentSocket())
	if err != nil {
		t.Fatalf("guest agent: %v", err)
	}
	var fs string
	if err := ag.Execute(ctx, "guest-fsfreeze-status", nil, &fs); err != nil || fs != "thawed" {
		t.Fatalf("guest-fsfreeze-status: %q, %v", fs, err)
	}
	ag.Close()
	c, err := vm.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Running bool `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil || !st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	if err := vm.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command("debugfs", "-R", "cat /hello.txt", img).Output()
	if err != nil || string(got) != "hello from the guest\n" {
		t.Fatalf("debugfs cat: %q, %v", got, err)
	}
}

// TestKernelCmdlineUnderLoad: the guests boot under TCG on a loaded CI
// machine, where the kernel's IO-APIC timer check can fail and panic the
// boot (TestE2ERecoverGuest flaked so); every guest, and the bench
// scripts through bench/guest, must get no_timer_check.
func TestKernelCmdlineUnderLoad(t *testing.T) {
	for _, want := range []string{"no_timer_check", "console=ttyS0", "panic=-1", "rdinit=/init"} {
		if !strings.Contains(" "+KernelCmdline+" ", " "+want+" ") {
			t.Errorf("KernelCmdline %q lacks %s", KernelCmdline, want)
		}
	}
	args, err := (&VM{}).qemuArgs("k", "i")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(args, "-append"); i < 0 || args[i+1] != KernelCmdline {
		t.Errorf("qemu is not given KernelCmdline: %q", args)
	}
}
