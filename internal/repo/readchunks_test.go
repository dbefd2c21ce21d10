package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

func TestReadChunksMatchesReadChunk(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := initRepo(t, mem.New(), testOptions())
	cs := int(r.Config().ChunkSize)
	img := repotest.Image(rng, 300*cs+cs/2, cs, 0.3)
	m := backup(t, r, nil, img, nil)
	changed := repotest.Mutate(rng, img, cs, 0.1)
	var slots []uint64
	for _, s := range changed {
		slots = append(slots, uint64(s))
	}
	m2 := backup(t, r, m, img, slots)
	im, err := r.OpenImage(context.Background(), m2.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := int(m2.Slots())
	for first := 0; first < n; first += 37 {
		k := min(37, n-first)
		dst := bytes.Repeat([]byte{0xee}, k*cs) // zero slots must be left alone
		zero, err := im.ReadChunks(context.Background(), uint64(first), k, dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.ReadChunks(context.Background(), uint64(first), k, dst[:len(dst)-cs]); !errors.Is(err, ErrInvalid) && first+k < n {
			t.Fatalf("short buffer: %v", err)
		}
		for i, z := range zero {
			want := img[(first+i)*cs : min((first+i+1)*cs, len(img))]
			got := dst[i*cs:][:len(want)]
			if z && !bytes.Equal(want, make([]byte, len(want))) {
				t.Fatalf("slot %d: zero for a non-zero chunk", first+i)
			}
			if z && !bytes.Equal(got, bytes.Repeat([]byte{0xee}, len(got))) {
				t.Fatalf("slot %d: zero slot's buffer was written", first+i)
			}
			if !z && !bytes.Equal(got, want) {
				t.Fatalf("slot %d differs", first+i)
			}
		}
	}
}

func TestCompressible(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("blockwise changed block tracking, 0123456789\n"), 1500)[:64<<10]
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"random", random, false},
		{"text", text, true},
		{"zeros", make([]byte, 64<<10), true},
		{"half random half zero", append(bytes.Clone(random[:32<<10]), make([]byte, 32<<10)...), true},
		{"small", random[:100], true},
	}
	for _, tc := range tests {
		if got := compressible(tc.p); got != tc.want {
			t.Errorf("%s: compressible = %v", tc.name, got)
		}
	}
}

// TestReadChunksPackOrder: a pack whose blobs are in descending slot order
// (as an incremental's concurrent writers or a prune's repacking leave
// them) is decoded in pack order, so each compressed chunk is decoded
// after its right-hand neighbour. A decoder allowed to write past its
// slot's end would clobber that neighbour's first bytes.
func TestReadChunksPackOrder(t *testing.T) {
	ctx := context.Background()
	for _, unencrypted := range []bool{false, true} {
		opts := testOptions()
		opts.Unencrypted = unencrypted
		r := initRepo(t, mem.New(), opts)
		cs := int(r.Config().ChunkSize)
		const slots = 16
		rng := rand.New(rand.NewPCG(5, 6))
		img := make([]byte, slots*cs)
		words := []string{"changed ", "block ", "tracking ", "snapshot ", "restore ", "0123 ", "\n"}
		for off := 0; off < len(img); {
			off += copy(img[off:], words[rng.IntN(len(words))])
		}
		repotest.Fill(rng, img[3*cs:4*cs]) // one incompressible chunk among them
		w, err := r.NewWriter(ctx, nil, Meta{Disk: "d", DiskUUID: "u", Size: uint64(len(img))})
		if err != nil {
			t.Fatal(err)
		}
		for s := slots - 1; s >= 0; s-- {
			if err := w.PutChunk(ctx, uint64(s), img[s*cs:(s+1)*cs]); err != nil {
				t.Fatal(err)
			}
		}
		m, err := w.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		im, err := r.OpenImage(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		dst := bytes.Repeat([]byte{0xee}, len(img))
		if _, err := im.ReadChunks(ctx, 0, slots, dst); err != nil {
			t.Fatal(err)
		}
		for s := range slots {
			if !bytes.Equal(dst[s*cs:(s+1)*cs], img[s*cs:(s+1)*cs]) {
				t.Fatalf("unencrypted %v: slot %d differs", unencrypted, s)
			}
		}
	}
}
