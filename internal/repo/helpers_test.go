package repo

import (
	"context"
	"sync"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// testKDF keeps Argon2id cheap in tests; production uses DefaultKDF.
var testKDF = KDFParams{Time: 1, Memory: 64, Threads: 1}

const testPassword = "correct horse battery staple"

func testOptions() Options {
	return Options{PackSize: 1 << 20, PageSlots: 256, KDF: testKDF}
}

// initRepo creates a repository that is checked, data and all, when the
// test ends: whatever a test did, it must leave the repository consistent
// unless it says it damages it (allowDamage).
func initRepo(t testing.TB, be backend.Backend, opts Options) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, testPassword, opts)
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
		r, err := OpenWith(ctx, be, s)
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
