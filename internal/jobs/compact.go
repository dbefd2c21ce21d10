package jobs

import (
	"errors"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// compactBelow: a history file of at least Options.CompactMin bytes
// whose trees use less than this share of it (free pages after
// retention, or pages split half full by an older version) is
// rewritten with full pages when the host starts.
const compactBelow = 0.6

// compactIfSparse rewrites the file at path into a new file with full
// pages (bolt.Compact), then renames it over the old one: a crash
// before the rename leaves the old file whole and a stray ".compact"
// file the next start removes (docs/jobs.md invariant 10).
func compactIfSparse(path string, o *bolt.Options, min int64) error {
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < min {
		return nil // absent (created by Open) or small: nothing to win
	}
	src, err := bolt.Open(path, 0o600, o)
	if err != nil {
		return err
	}
	defer src.Close()
	used, err := usedBytes(src)
	if err != nil || float64(used) >= compactBelow*float64(fi.Size()) {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: o.Timeout, NoSync: o.NoSync})
	if err != nil {
		return err
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	if err := errors.Join(dst.Sync(), dst.Close(), src.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(path))
}

// usedBytes is what the records and their tree take in the file's
// pages: the bytes a compacted file would need, about.
func usedBytes(db *bolt.DB) (int64, error) {
	var used int64
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			st := b.Stats()
			used += int64(st.BranchInuse + st.LeafInuse + st.InlineBucketInuse)
			return nil
		})
	})
	return used, err
}
