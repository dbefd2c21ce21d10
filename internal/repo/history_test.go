package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestRandomHistory drives a random sequence of incrementals (changed,
// zeroed and resized regions, some pages left entirely zero), forgets and
// prunes, and after each step checks that every remaining restore point
// reads back exactly and the repository checks clean.
func TestRandomHistory(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomHistory(t, seed) })
	}
}

func randomHistory(t *testing.T, seed uint64) {
	ctx := context.Background()
	opts := testOptions()
	opts.PageSlots, opts.PackSize, opts.ChunkSize = 8, 64<<10, 4<<10
	r := initRepo(t, mem.New(), opts)
	rng := rand.New(rand.NewPCG(seed, 42))
	img := repotest.Image(rng, 200<<10, 4<<10, 0.5)
	live := map[ID][]byte{}
	var last *Manifest
	for step := range 12 {
		switch op := rng.IntN(6); {
		case op == 0 && len(live) > 1:
			ids := sortedIDs(live)
			victim := ids[rng.IntN(len(ids))]
			t.Logf("forget %v", victim.Short())
			if err := r.Forget(ctx, victim); err != nil {
				t.Fatal(err)
			}
			delete(live, victim)
			if last != nil && last.ID == victim {
				img = slices.Clone(live[ids[0]])
				if ids[0] == victim {
					img = slices.Clone(live[ids[1]])
				}
				w, err := r.NewWriter(ctx, last, Meta{Size: last.Size})
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("writer on forgotten parent: %v", err)
				}
				_ = w
				last = nil
			}
			if _, err := r.Prune(ctx); err != nil {
				t.Fatalf("step %d prune: %v", step, err)
			}
		default:
			var slots []uint64
			img, slots = evolve(rng, img, 4<<10)
			parent := last
			if parent != nil && parent.Size != uint64(len(img)) && rng.IntN(2) == 0 {
				parent = nil // sometimes a fresh full backup after a resize
			}
			if parent == nil {
				slots = nil
			}
			last = backup(t, r, parent, img, slots)
			t.Logf("backup %v size %d parent %v", last.ID.Short(), len(img), parent != nil)
			live[last.ID] = slices.Clone(img)
		}
		t.Logf("step %d: live=%d last=%v", step, len(live), last != nil)
		for id, want := range live {
			repotest.Verify(t, r.OpenImage, id, want)
		}
		repotest.CheckClean(t, r.Check, CheckOptions{ReadData: step%4 == 3})
	}
}

// evolve changes, zeroes or resizes parts of img and returns the new image
// and exactly the slots whose content changed, as CBT would report them.
// A resize sends nothing by itself: a grown tail reads as zeros and a
// shrunk last slot is a prefix of the inherited chunk.
func evolve(rng *rand.Rand, img []byte, cs int) ([]byte, []uint64) {
	dirty := map[uint64]bool{}
	switch rng.IntN(4) {
	case 0:
		// Small sizes and partial last slots, so shrink-then-grow happens.
		size := (150+rng.IntN(100))<<10 + rng.IntN(cs)
		img = append(img[:min(len(img), size):min(len(img), size)], make([]byte, max(0, size-len(img)))...)
	case 1: // zero a run of whole slots (a discard)
		start := rng.IntN(len(img) / cs)
		for s := start; s < min(start+rng.IntN(20), len(img)/cs); s++ {
			clear(img[s*cs : (s+1)*cs])
			dirty[uint64(s)] = true
		}
	}
	for _, b := range repotest.Mutate(rng, img, cs, 0.05) {
		dirty[uint64(b)] = true
	}
	var slots []uint64
	for s := range dirty {
		slots = append(slots, s)
	}
	return img, slots
}

func sortedIDs(m map[ID][]byte) []ID {
	var ids []ID
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b ID) int { return slices.Compare(a[:], b[:]) })
	return ids
}
