package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
)

func newDisk(t *testing.T, size int64, opt Options, dsOpts ...DatastoreOption) (*Datastore, *Disk) {
	t.Helper()
	ds, err := OpenDatastore(t.TempDir(), dsOpts...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("d", size, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Check(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("check: %v", err)
		}
		d.Close()
	})
	return ds, d
}

func TestNames(t *testing.T) {
	ds, err := OpenDatastore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"", ".", "..", "../x", "a/b", "-a", ".a", "a b", string(make([]byte, 65)), "é"} {
		if _, err := ds.Create(n, 1<<20, Options{}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(%q): %v", n, err)
		}
	}
	for _, n := range []string{"a", "vm-01.disk_0", "A9"} {
		d, err := ds.Create(n, 1<<20, Options{})
		if err != nil {
			t.Fatalf("Create(%q): %v", n, err)
		}
		d.Close()
	}
	if _, err := ds.Create("a", 1<<20, Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	names, _ := ds.List()
	if len(names) != 3 {
		t.Errorf("list %v", names)
	}
}

func TestBadRequests(t *testing.T) {
	_, d := newDisk(t, 1<<20, Options{})
	buf := make([]byte, 4096)
	tests := []struct {
		name string
		err  error
		do   func() error
	}{
		{"misaligned offset", ErrMisaligned, func() error { _, err := d.WriteAt(buf, 100); return err }},
		{"misaligned length", ErrMisaligned, func() error { _, err := d.ReadAt(buf[:100], 0); return err }},
		{"write past end", ErrOutOfRange, func() error { _, err := d.WriteAt(buf, 1<<20-512); return err }},
		{"read past end", ErrOutOfRange, func() error { _, err := d.ReadAt(buf, 1<<20); return err }},
		{"negative offset", ErrOutOfRange, func() error { _, err := d.ReadAt(buf, -512); return err }},
		{"zero past end", ErrOutOfRange, func() error { return d.Zero(1<<20-512, 1024, true) }},
		{"shrink", ErrShrink, func() error { return d.Grow(512) }},
		{"misaligned grow", ErrMisaligned, func() error { return d.Grow(1<<20 + 1) }},
		{"unknown snapshot", ErrNotFound, func() error { _, err := d.OpenSnapshot("nope"); return err }},
		{"delete unknown snapshot", ErrNotFound, func() error { _, err := d.DeleteSnapshot("nope"); return err }},
		{"bad snapshot name", ErrInvalidName, func() error { _, err := d.CreateSnapshot("../x", ""); return err }},
	}
	for _, tc := range tests {
		if err := tc.do(); !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestSecondOpenIsBusy(t *testing.T) {
	ds, d := newDisk(t, 1<<20, Options{})
	if _, err := ds.Open("d"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second open: %v", err)
	}
	if err := ds.Delete("d"); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete open disk: %v", err)
	}
	d.Close()
	if err := ds.Delete("d"); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Open("d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open deleted: %v", err)
	}
}

// Without snapshots a disk is a plain raw file qemu-img can read.
func TestFlatIsRaw(t *testing.T) {
	_, d := newDisk(t, 8<<20, Options{})
	p := bytes.Repeat([]byte("blockwise"), 512)[:4096]
	d.WriteAt(p, 1<<20)
	s, _ := d.CreateSnapshot("", "")
	d.WriteAt(bytes.Repeat([]byte{7}, 4096), 2<<20)
	task, err := d.DeleteSnapshot(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Flush()
	raw, err := os.ReadFile(filepath.Join(d.Path(), flatName))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 8<<20 || !bytes.Equal(raw[1<<20:1<<20+4096], p) || raw[2<<20] != 7 {
		t.Fatal("flat file does not hold the disk's data after consolidation")
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(d.Path(), flatName), filepath.Join(d.Path(), flatName)).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
	}
}

func TestSnapshotReadWhileWriting(t *testing.T) {
	_, d := newDisk(t, 4<<20, Options{})
	old := bytes.Repeat([]byte{1}, 4<<20)
	d.WriteAt(old, 0)
	s, _ := d.CreateSnapshot("s1", "")
	view, err := d.OpenSnapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			d.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i%1024)*4096)
		}
	}()
	got := make([]byte, 4<<20)
	for i := 0; i < 20; i++ {
		view.ReadAt(got, 0)
		if !bytes.Equal(got, old) {
			t.Fatal("snapshot view changed under live writes")
		}
	}
	<-done
	if _, err := d.DeleteSnapshot(s.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete with open view: %v", err)
	}
}

// Consolidation of the live top runs while writers keep writing; no write
// may be lost and no CBT mark is added by the merge itself.
func TestConsolidationUnderWrites(t *testing.T) {
	_, d := newDisk(t, 16<<20, Options{CBT: cbt.Config{Granularity: 64 << 10}})
	ref := make([]byte, 16<<20)
	for i := range 256 {
		p := bytes.Repeat([]byte{byte(i + 1)}, 64<<10)
		d.WriteAt(p, int64(i)*64<<10)
		copy(ref[i*64<<10:], p)
	}
	base, _ := d.CreateSnapshot("base", "")
	for i := 0; i < 256; i += 2 {
		p := bytes.Repeat([]byte{0xee}, 64<<10)
		d.WriteAt(p, int64(i)*64<<10)
		copy(ref[i*64<<10:], p)
	}
	mid, _ := d.CreateSnapshot("mid", "")
	task, err := d.DeleteSnapshot("mid")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; !isDone(task); i++ {
		off := int64(i*7919%4096) * 4096
		p := bytes.Repeat([]byte{byte(i)}, 4096)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(ref[off:], p)
	}
	if err := task.Err(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(ref))
	d.ReadAt(got, 0)
	if i := firstDiff(got, ref); i >= 0 {
		t.Fatalf("differs at %d after consolidation", i)
	}
	st, _ := d.Stat()
	if st.Layers != 2 {
		t.Fatalf("%d layers after consolidation", st.Layers)
	}
	_ = mid
	_ = base
}

func isDone(t *Task) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

func TestGrowCountsAsChanged(t *testing.T) {
	_, d := newDisk(t, 1<<20, Options{CBT: cbt.Config{Granularity: 64 << 10}})
	s1, _ := d.CreateSnapshot("s1", "")
	if err := d.Grow(2 << 20); err != nil {
		t.Fatal(err)
	}
	d.CreateSnapshot("s2", "")
	v, _ := d.OpenSnapshot("s2")
	defer v.Close()
	ca, err := v.ChangedAreas(0, s1.ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ca.ChangedArea) != 1 || ca.ChangedArea[0] != (Area{1 << 20, 1 << 20}) {
		t.Fatalf("grown area: %+v", ca.ChangedArea)
	}
	got := make([]byte, 1<<20)
	v.ReadAt(got, 1<<20)
	if !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Fatal("grown area not zero")
	}
}

func TestChangeIDErrors(t *testing.T) {
	_, d := newDisk(t, 1<<20, Options{})
	s1, _ := d.CreateSnapshot("s1", "")
	d.WriteAt(make([]byte, 512), 0)
	d.CreateSnapshot("s2", "")
	v, _ := d.OpenSnapshot("s1")
	defer v.Close()
	_, other := newDisk(t, 1<<20, Options{})
	foreign, _ := other.CurrentChangeID()
	s2v, _ := d.OpenSnapshot("s2")
	defer s2v.Close()
	for _, id := range []string{"", "garbage", foreign, s1.ChangeID + "0"} {
		if _, err := s2v.ChangedAreas(0, id); !errors.Is(err, ErrChangeIDInvalid) {
			t.Errorf("%q: %v", id, err)
		}
	}
	if err := d.ResetCBT(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2v.ChangedAreas(0, s1.ChangeID); !errors.Is(err, ErrChangeIDInvalid) {
		t.Errorf("after reset: %v", err)
	}
	if _, err := s2v.ChangedAreas(2<<20, "*"); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("start past end: %v", err)
	}
}

func TestSnapshotCreateIsConstantTime(t *testing.T) {
	_, d := newDisk(t, 1<<40, Options{})
	d.WriteAt(make([]byte, 4096), 1<<39)
	start := time.Now()
	if _, err := d.CreateSnapshot("", ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of a 1 TiB disk: %v", time.Since(start))
}

func TestCorruptMetadataIsReported(t *testing.T) {
	ds, d := newDisk(t, 1<<20, Options{})
	d.CreateSnapshot("s", "")
	dir := d.Path()
	d.Close()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".map" || e.Name() == metaName {
			p := filepath.Join(dir, e.Name())
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 0x55
			os.WriteFile(p, b, 0o600)
			_, err := ds.Open("d")
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s damaged: %v", e.Name(), err)
			}
			b[len(b)-1] ^= 0x55
			os.WriteFile(p, b, 0o600)
		}
	}
	d2, err := ds.Open("d")
	if err != nil {
		t.Fatal(err)
	}
	d2.Close()
}
