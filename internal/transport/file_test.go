package transport

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backup"
)

// TestFileTarget: a restore into a new raw file gives the disk's bytes,
// zero chunks as holes, and refuses a file that exists.
func TestFileTarget(t *testing.T) {
	th := startHost(t)
	const size = 8 << 20
	d := th.makeDisk(t, "vm", size)
	r := newRepo(t)
	ctx := context.Background()
	res, err := backup.Run(ctx, backup.Options{Disk: "vm", Host: backup.ClientHost{C: th.env.Client},
		Repo: r, Full: true, Open: Opener(ModeSAN, th.env, nil)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "restored.raw")
	ft, err := CreateFile(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, backup.RestoreOptions{Repo: r, Manifest: res.Manifest.ID, Target: ft,
		TargetIsZero: true, Workers: 2, ReadBack: true}); err != nil {
		t.Fatal(err)
	}
	if err := ft.Close(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	if _, err := d.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restored file differs from the disk (%v)", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Blocks*512 >= size {
		t.Fatalf("restored file is not sparse: %d bytes allocated (%v)", st.Blocks*512, err)
	}
	if _, err := CreateFile(path, size); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateFile over an existing file: %v", err)
	}
}

// TestReadTest reads every allocated byte of a disk through the chosen
// mode and leaves no snapshot behind, also when the mode fails.
func TestReadTest(t *testing.T) {
	th := startHost(t)
	th.makeDisk(t, "vm", 8<<20)
	ctx := context.Background()
	for _, mode := range []string{ModeSAN, ModeHotAdd, ModeNBDSSL} { // nbdssl: the secure default (tickets)
		res, err := ReadTest(ctx, mode, th.env, "vm", 2)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if res.Bytes < 4096 || res.Bytes > 8<<20 || !strings.HasPrefix(res.Transport, "transport "+mode) {
			t.Fatalf("%s: %+v", mode, res)
		}
	}
	if _, err := ReadTest(ctx, "warp", th.env, "vm", 2); !errors.Is(err, ErrUnknownMode) {
		t.Fatalf("unknown mode: %v", err)
	}
	for _, workers := range []int{0, -1} { // 0 used to block forever, -1 to read unbounded
		done := make(chan error, 1)
		go func() { _, err := ReadTest(ctx, ModeHotAdd, th.env, "vm", workers); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("%d workers: no error", workers)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d workers: ReadTest hangs", workers)
		}
	}
	snaps, err := th.env.Client.ListSnapshots(ctx, "vm")
	if err != nil || len(snaps) != 0 {
		t.Fatalf("read-test left snapshots: %v %v", snaps, err)
	}
}
