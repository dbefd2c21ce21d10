package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"golang.org/x/sync/errgroup"
)

// testKDF keeps Argon2id cheap in tests; production uses DefaultKDF.
var testKDF = KDFParams{Time: 1, Memory: 64, Threads: 1}

const testPassword = "correct horse battery staple"

func testOptions() Options {
	return withTestSettings(Options{PackSize: 1 << 20, PageSlots: 256, KDF: testKDF})
}

// testSettings are the settings tests open repositories with: the
// defaults, but for BLOCKWISE_TEST_INDEX_BLOBS=N, which keeps at most N
// blobs in the index's memory, so every test also goes through spilled
// runs (scripts/test.sh does, with a handful).
func testSettings() Options { return withTestSettings(Options{}) }

// withTestSettings applies BLOCKWISE_TEST_INDEX_BLOBS to o unless o sets
// IndexMemoryBlobs itself.
func withTestSettings(o Options) Options {
	if n, err := strconv.Atoi(os.Getenv("BLOCKWISE_TEST_INDEX_BLOBS")); err == nil && o.IndexMemoryBlobs == 0 {
		o.IndexMemoryBlobs = n
		if n == 0 {
			o.IndexMemoryBlobs = -1 // 0 meant no limit
		}
	}
	return o
}

// reopen opens r's repository again, as another process would, with
// settings s (its own Repository: r's settings do not carry over).
func reopen(t testing.TB, r *Repository, s Options) *Repository {
	t.Helper()
	r2, err := Open(context.Background(), r.Backend(), testPassword, withTestSettings(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	return r2
}

// initRepo creates a repository that is checked, data and all, when the
// test ends: whatever a test did, it must leave the repository consistent
// unless it says it damages it (allowDamage).
func initRepo(t testing.TB, be backend.Backend, opts Options) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, testPassword, withTestSettings(opts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAfterTest(t, be) })
	return r
}

var (
	damaged     sync.Map // tests that damage their repository on purpose
	checkSecret sync.Map // tests whose repository the password no longer opens
)

// allowDamage exempts t's repositories from the check at its end.
func allowDamage(t testing.TB) { damaged.Store(t, true) }

// checkWith makes the check at the end of t open its repository with s.
func checkWith(t testing.TB, s Secret) { checkSecret.Store(t, s) }

func checkAfterTest(t testing.TB, be backend.Backend) {
	if _, ok := damaged.Load(t); ok || t.Failed() {
		return
	}
	ctx := context.Background()
	s := Secret{Password: testPassword}
	if v, ok := checkSecret.Load(t); ok {
		s = v.(Secret)
	}
	r, err := OpenWith(ctx, be, s, testSettings())
	var res *CheckResult
	if err == nil {
		res, err = r.Check(ctx, CheckOptions{ReadData: true})
	}
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		t.Errorf("after the test: %v", err)
	}
}

// randomImage makes an image of size bytes: random chunks, with about
// zeroFrac of the chunks all zero (thin-provisioned regions).
func randomImage(rng *rand.Rand, size int, chunk int, zeroFrac float64) []byte {
	img := make([]byte, size)
	for off := 0; off < size; off += chunk {
		end := min(off+chunk, size)
		if rng.Float64() < zeroFrac {
			continue
		}
		fill(rng, img[off:end])
	}
	return img
}

func fill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

// mutate rewrites fraction of the blk-sized blocks of img at scattered,
// distinct positions and returns the changed block numbers.
func mutate(rng *rand.Rand, img []byte, blk int, fraction float64) []int {
	nblk := (len(img) + blk - 1) / blk
	n := max(1, int(float64(nblk)*fraction))
	perm := rng.Perm(nblk)[:n]
	for _, b := range perm {
		fill(rng, img[b*blk:min((b+1)*blk, len(img))])
	}
	return perm
}

// backup writes the given slots of img (all when slots is nil) with four
// concurrent writers and commits.
func backup(t testing.TB, r *Repository, parent *Manifest, img []byte, slots []uint64) *Manifest {
	t.Helper()
	m, err := tryBackup(context.Background(), r, parent, img, slots)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tryBackup(ctx context.Context, r *Repository, parent *Manifest, img []byte, slots []uint64) (*Manifest, error) {
	w, err := r.NewWriter(ctx, parent, Meta{Disk: "disk0", DiskUUID: "uuid-1", Size: uint64(len(img))})
	if err != nil {
		return nil, err
	}
	cs := uint64(r.cfg.ChunkSize)
	if slots == nil {
		for s := range ceilDiv(uint64(len(img)), cs) {
			slots = append(slots, s)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, s := range slots {
		g.Go(func() error {
			return w.PutChunk(gctx, s, img[s*cs:min((s+1)*cs, uint64(len(img)))])
		})
	}
	if err := g.Wait(); err != nil {
		w.Abort(context.Background())
		return nil, err
	}
	return w.Commit(ctx)
}

// verifyImage reads the image back through ReadAt in odd-sized pieces.
func verifyImage(t testing.TB, r *Repository, id ID, want []byte) {
	t.Helper()
	im, err := r.OpenImage(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if im.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", im.Size(), len(want))
	}
	got, err := io.ReadAll(io.NewSectionReader(im, 0, im.Size()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("image %v differs from what was written", id.Short())
	}
}

func checkClean(t testing.TB, r *Repository, readData bool) *CheckResult {
	t.Helper()
	res, err := r.Check(context.Background(), CheckOptions{ReadData: readData})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	return res
}
