package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"
)

// indexFileEntries bounds the entries of one index file that Prune and
// RepairIndex write (~1.7 MB), and about those a backup writes (packer.
// takeDone), so later readers that go file by file (Open, Check, Prune)
// hold little at a time.
const indexFileEntries = 32 << 10

// indexWriter writes index files as packs are added to it, for Prune and
// RepairIndex, which replace every index file of a repository.
type indexWriter struct {
	r       *Repository
	batch   []packInfo
	entries int
	written []string // names of the files written
}

func newIndexWriter(r *Repository) *indexWriter {
	return &indexWriter{r: r}
}

// add names p in the next index file, writing the file once it is full.
func (w *indexWriter) add(ctx context.Context, p packInfo) error {
	w.batch = append(w.batch, p)
	w.entries += len(p.Entries)
	if w.entries < indexFileEntries {
		return nil
	}
	return w.flush(ctx)
}

func (w *indexWriter) flush(ctx context.Context) error {
	if len(w.batch) == 0 {
		return nil
	}
	id, err := w.r.saveFile(ctx, backend.Index, sealEnvelope(w.r.crypt, indexMagic, encodeIndex(w.batch)))
	if err != nil {
		return err
	}
	w.written = append(w.written, id.String())
	w.batch, w.entries = nil, 0
	return nil
}

// replace writes the last file, removes every old index file that is not
// also a new one, and reloads the lookup index from the new files (unless
// the repository was opened without one, OpenNoIndex: `prune` and
// `repair index` exit next); it returns how many old files it removed. Until the removals end, old and
// new files name the same packs, which readers tolerate.
func (w *indexWriter) replace(ctx context.Context, old []string) (removed int, err error) {
	if err := w.flush(ctx); err != nil {
		return 0, err
	}
	for _, n := range old {
		if slices.Contains(w.written, n) {
			continue
		}
		err := w.r.be.Remove(ctx, backend.Handle{Type: backend.Index, Name: n})
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			return removed, fmt.Errorf("repo: remove index %s: %w", n, err)
		}
		removed++
	}
	if w.r.noIndex.Load() {
		w.r.idx.replace(w.r.newIndex()) // what it held may name removed packs
		return removed, nil
	}
	if err := w.r.reloadIndex(ctx); err != nil {
		return removed, fmt.Errorf("repo: index rewritten, but reading it back: %w", err)
	}
	return removed, nil
}
