package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/backendtest"
	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestFaultInjection runs backups over a backend that fails about one
// operation in twenty (half of them after the write took effect), wrapped
// in the retry wrapper with too few attempts to hide every fault. Every
// operation must succeed or fail cleanly: whatever was committed reads
// back exactly, nothing else is visible, and Check finds no damage.
func TestFaultInjection(t *testing.T) {
	seeds := uint64(16)
	if n, err := strconv.ParseUint(os.Getenv("BLOCKWISE_FAULT_SEEDS"), 10, 64); err == nil {
		seeds = n // soak: BLOCKWISE_FAULT_SEEDS=500
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { faultRun(t, seed, testOptions()) })
		// A pack per chunk: each backup writes index files as it goes.
		t.Run(fmt.Sprint("smallpacks", seed), func(t *testing.T) { faultRun(t, seed, smallPacks()) })
	}
}

func faultRun(t *testing.T, seed uint64, opts Options) {
	ctx := context.Background()
	store := mem.New()
	faulty := backendtest.NewFaulty(store, seed, 0.15)
	retry := backend.NewRetry(faulty, 3)
	retry.BaseDelay, retry.MaxDelay = time.Microsecond, time.Microsecond
	faulty.SetEnabled(false)
	r := initRepo(t, retry, opts)
	faulty.SetEnabled(true)

	rng := rand.New(rand.NewPCG(seed, 99))
	size := 4 << 20
	if opts.PackSize < 64<<10 {
		size = 2 * indexEvery << 16 // enough packs for index files mid-backup
	}
	img := repotest.Image(rng, size, 64<<10, 0.2)
	committed := map[ID][]byte{}
	var failed [][]byte // images of backups whose Commit reported an error
	var parent *Manifest
	for range 4 {
		var slots []uint64
		if parent != nil {
			slots = slotsOf(repotest.Mutate(rng, img, 64<<10, 0.05))
		}
		m, err := tryBackup(ctx, r, parent, img, slots)
		if err != nil {
			// A failed incremental must not be used as a parent, and its
			// changes must be sent again next time: start over as a full.
			parent = nil
			failed = append(failed, slices.Clone(img))
			continue
		}
		committed[m.ID] = slices.Clone(img)
		parent = m
	}
	// Prune may fail cleanly: a transient error that outlasted the
	// retries, or ErrLocked from a lock file a failed Unlock left behind.
	if _, err := r.Prune(ctx); err != nil && !backend.IsTransient(err) && !errors.Is(err, ErrLocked) {
		t.Fatalf("prune: %v", err)
	}
	// So may repair index, leaving new and old index files side by side.
	_, repairErr := r.RepairIndex(ctx, RepairIndexOptions{ReadAllPacks: seed%2 == 1})
	if repairErr != nil && !backend.IsTransient(repairErr) && !errors.Is(repairErr, ErrLocked) {
		t.Fatalf("repair index: %v", repairErr)
	}
	faulty.SetEnabled(false)
	t.Logf("seed %d: %d faults injected, %d backups committed, repair index: %v", seed, faulty.Injected(), len(committed), repairErr)

	r2, err := Open(ctx, store, testPassword, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	// A lock whose removal failed stays until it expires or its process
	// is gone, and this process is not: remove it as `repo unlock
	// --remove-all` would, since nothing holds a lock any more.
	if _, err := r2.Unlock(ctx, true); err != nil {
		t.Fatal(err)
	}
	repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
	ms, err := r2.ListManifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if want, ok := committed[m.ID]; ok {
			repotest.Verify(t, r2.OpenImage, m.ID, want)
			delete(committed, m.ID)
			continue
		}
		// Only a commit whose outcome was reported unknown may leave a
		// manifest behind, and then it must be complete and correct.
		if !slices.ContainsFunc(failed, func(img []byte) bool { return imageEquals(r2, m.ID, img) }) {
			t.Fatalf("manifest %v visible but matches no backup", m.ID.Short())
		}
	}
	if len(committed) != 0 {
		t.Fatalf("%d committed backups missing", len(committed))
	}
}

func imageEquals(r *Repository, id ID, want []byte) bool {
	im, err := r.OpenImage(context.Background(), id)
	if err != nil || im.Size() != int64(len(want)) {
		return false
	}
	got := make([]byte, len(want))
	_, err = im.ReadAt(got, 0)
	return err == nil && string(got) == string(want)
}
