package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
	"github.com/blockwise/blockwise/internal/testfs"
)

// TestNoLockReadOnly: on a repository that cannot be written, Check
// fails for want of a lock (ErrReadOnly); with SetNoLock, Check (reading
// every pack) and reading an image work, and whatever writes is refused
// (ErrInvalid) rather than run without a lock.
func TestNoLockReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := initRepo(t, be, testOptions())
	img := repotest.Image(rand.New(rand.NewPCG(9, 9)), 2<<20, 64<<10, 0.2)
	m := backup(t, r, nil, img, nil)
	r.Close()

	robe, err := local.Open(testfs.ReadOnly(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, robe, testPassword, testSettings())
	if err != nil {
		t.Fatalf("open read-only: %v", err)
	}
	defer ro.Close()
	if _, err := ro.Check(ctx, CheckOptions{ReadData: true}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("check of a read-only repository with a lock: %v, want ErrReadOnly", err)
	}
	ro.SetNoLock(true)
	res, err := ro.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || res.Err() != nil || res.PacksRead == 0 {
		t.Fatalf("check --read-data without a lock: %v %+v", err, res)
	}
	lock, err := ro.LockRead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	im, err := ro.OpenImage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read the image without a lock: %v, equal %v", err, bytes.Equal(got, img))
	}
	if err := lock.KeepFresh(ctx)(); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Lock(ctx, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Lock under SetNoLock: %v", err)
	}
	if _, err := ro.NewWriter(ctx, nil, Meta{Disk: "d", Size: 1 << 20, Time: time.Now()}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewWriter under SetNoLock: %v", err)
	}
	if err := ro.Forget(ctx, m.ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Forget under SetNoLock: %v", err)
	}
	if _, err := ro.Prune(ctx); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Prune under SetNoLock: %v", err)
	}
}

// TestNoLockRefusesEveryWrite: under SetNoLock, the writes that take no
// lock of their own (adding or removing a key slot, removing locks) are
// refused too, and change nothing: the handle is for reading.
func TestNoLockRefusesEveryWrite(t *testing.T) {
	ctx := context.Background()
	r := initRepo(t, mem.New(), testOptions())
	if err := r.AddKey(ctx, Secret{Password: "second"}, testKDF); err != nil {
		t.Fatal(err)
	}
	other, err := r.Lock(ctx, false) // a live lock Unlock(all) would remove
	if err != nil {
		t.Fatal(err)
	}
	defer other.Unlock(ctx)
	keys, _ := r.Keys(ctx)
	r.SetNoLock(true)
	writes := []struct {
		name string
		do   func() error
	}{
		{"AddKey", func() error { return r.AddKey(ctx, Secret{Password: "third"}, testKDF) }},
		{"RemoveKey", func() error { return r.RemoveKey(ctx, keys[0].ID) }},
		{"Unlock", func() error { _, err := r.Unlock(ctx, true); return err }},
	}
	for _, w := range writes {
		if err := w.do(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s under SetNoLock: %v, want ErrInvalid", w.name, err)
		}
	}
	r.SetNoLock(false)
	if got, _ := r.Keys(ctx); len(got) != len(keys) {
		t.Errorf("key slots %d, want %d unchanged", len(got), len(keys))
	}
	if _, err := r.Lock(ctx, true); !errors.Is(err, ErrLocked) {
		t.Errorf("exclusive lock beside the other: %v, want ErrLocked (its lock was removed)", err)
	}
}
