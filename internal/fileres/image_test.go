package fileres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// testDisk is a GPT disk built once per test binary: part1 ext4 (the
// guest-like tree), part2 FAT32, part3 an LVM2 PV whose logical volume
// holds ext2 (block maps), part4 Linux swap (refused by name).
var (
	diskOnce sync.Once
	disk     imagetest.GuestDisk
	diskDir  string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if diskDir != "" {
		os.RemoveAll(diskDir)
	}
	os.Exit(code)
}

func buildDisk(t *testing.T) imagetest.GuestDisk {
	t.Helper()
	diskOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fileres")
		if err != nil {
			t.Fatal(err)
		}
		diskDir = dir
		disk = imagetest.BuildGuestDisk(t, dir, 300)
	})
	if disk.Img == "" {
		t.Fatal("test disk not built")
	}
	return disk
}

func openTestPoint(t *testing.T, img string) *Point {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	p, err := Open(context.Background(), f, fi.Size(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVolumes(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.Img)
	if p.Table != "gpt" || len(p.Volumes) != 4 {
		t.Fatalf("table %q, %d volumes", p.Table, len(p.Volumes))
	}
	want := []struct{ name, fs string }{{"part1", "ext4"}, {"part2", "vfat (FAT32)"}, {"part3", ""}, {"part4", ""}}
	for i, w := range want {
		v := p.Volumes[i]
		if v.Name != w.name || (w.fs != "" && (v.FS == nil || v.FS.Type() != w.fs)) {
			t.Errorf("volume %d: %s %s %v", i, v.Name, v.Desc, v.Err)
		}
	}
	lv := p.Volumes[2].Sub
	if len(lv) != 1 || lv[0].Name != "bwtest-root" || lv[0].FS == nil || lv[0].FS.Type() != "ext2" {
		t.Fatalf("LVM: %+v %v", lv, p.Volumes[2].Err)
	}
	var ve *VolumeError
	if err := p.Volumes[3].Err; !errors.As(err, &ve) || ve.Volume != "part4" || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("swap partition: %v", err)
	}
	if _, err := p.ReadDir(context.Background(), Ref{Vol: p.Volumes[3]}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("listing swap: %v", err)
	}
}

func TestRestoreTree(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.Img)
	ctx := context.Background()
	for _, c := range []struct {
		path, src string
		o         imagetest.CompareOptions
	}{
		{"/part1", d.Tree, imagetest.CompareOptions{Sparse: true, TimeStep: 1e9}},             // mkfs -d keeps seconds,
		{"/part3/bwtest-root", d.Tree, imagetest.CompareOptions{Sparse: true, TimeStep: 1e9}}, // mkfs -d keeps seconds,
		{"/part2", d.FATTree, imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9}},
	} {
		t.Run(c.path, func(t *testing.T) {
			out := t.TempDir()
			st, err := p.Restore(ctx, []string{c.path}, out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", st)
			imagetest.CompareTree(t, c.src, filepath.Join(out, c.path), c.o)
		})
	}
}

func TestLookup(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.Img)
	ctx := context.Background()
	for _, c := range []struct {
		path string
		err  error
	}{
		{"/part1/etc/hosts", nil},
		{"/part1/link-abs/sites-enabled/default", nil}, // through an absolute symlink
		{"/part1/../etc", ErrEscape},
		{"/part1/etc/nope", ErrNotFound},
		{"/part1/etc/hosts/x", ErrNotDir},
		{"/part9", ErrNotFound},
		{"/part4/x", ErrUnsupported},
		{"/part2/a long file name document.txt", ErrNotFound},
		{"/part2/A Long File Name Document.txt", nil},
	} {
		_, err := p.Lookup(ctx, c.path)
		if (c.err == nil) != (err == nil) || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.path, err, c.err)
		}
	}
}

// A damaged primary GPT header: the partitions come from the backup
// header at the disk's end, and the table says so.
func TestGPTBackupHeader(t *testing.T) {
	d := buildDisk(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	imagetest.Run(t, nil, "cp", "--sparse=always", d.Img, img)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("damaged!"), 512+56) // the disk GUID: the header CRC fails
	f.Close()
	p := openTestPoint(t, img)
	if !strings.HasPrefix(p.Table, "gpt (backup header") || len(p.Volumes) != 4 || !strings.Contains(p.Table, "CRC") {
		t.Fatalf("table %q, %d volumes", p.Table, len(p.Volumes))
	}
	if _, err := p.Lookup(context.Background(), "/part1/etc/hosts"); err != nil {
		t.Fatal(err)
	}
}

// Restoring the whole point restores every readable volume and then
// fails naming the one it could not read (swap), rather than stopping at
// it.
func TestRestoreAllSkipsUnreadableVolume(t *testing.T) {
	d := buildDisk(t)
	p := openTestPoint(t, d.Img)
	out := t.TempDir()
	st, err := p.Restore(context.Background(), []string{"/"}, out)
	var ve *VolumeError
	if !errors.As(err, &ve) || ve.Volume != "part4" || len(st.SkippedVolumes) != 1 {
		t.Fatalf("restore /: %v, skipped %v", err, st.SkippedVolumes)
	}
	imagetest.CompareTree(t, d.FATTree, filepath.Join(out, "part2"), imagetest.CompareOptions{NoOwners: true, TimeStep: 2e9})
	imagetest.CompareTree(t, d.Tree, filepath.Join(out, "part3/bwtest-root"), imagetest.CompareOptions{TimeStep: 1e9})
}
