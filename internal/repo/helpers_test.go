package repo

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/repo/repotest"
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
	checkAfterTest(t, be)
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

// checkAfterTest checks be, data and all, when t ends.
func checkAfterTest(t testing.TB, be backend.Backend) {
	skip := func() bool { _, ok := damaged.Load(t); return ok }
	repotest.CheckAtEnd(t, skip, func(ctx context.Context) error {
		s := Secret{Password: testPassword}
		if v, ok := checkSecret.Load(t); ok {
			s = v.(Secret)
		}
		r, err := OpenWith(ctx, be, s, testSettings())
		if err != nil {
			return err
		}
		res, err := r.Check(ctx, CheckOptions{ReadData: true})
		if err != nil {
			return err
		}
		return res.Err()
	})
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
	return repotest.Backup(ctx, r.NewWriter, parent, Meta{Disk: "disk0", DiskUUID: "uuid-1", Size: uint64(len(img))},
		img, int(r.cfg.ChunkSize), slots)
}
