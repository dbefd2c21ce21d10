package repo

import (
	"context"
	"fmt"
)

// Reopen lets PutChunk write the given slots again after Done passed
// them: a backup whose proof failed re-reads the areas that differ
// (docs/repository.md, T5). The pages Done already stored are loaded
// back, which needs them indexed: the writer's packs are flushed and an
// index file names them first (invariant 2 holds: they are sealed and
// durable). Rare by design, so it favours simplicity over speed.
func (w *SnapshotWriter) Reopen(ctx context.Context, slots []uint64) error {
	if err := w.usable(); err != nil {
		return err
	}
	ps := uint64(w.r.cfg.PageSlots)
	w.mu.Lock()
	var todo []uint64
	for _, s := range slots {
		pi := s / ps
		if pi < w.doneTo && !w.reopened[pi] {
			w.reopened[pi] = true
			if _, ok := w.stored[pi]; ok {
				todo = append(todo, pi)
			}
		}
	}
	w.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if err := w.pk.flush(ctx); err != nil {
		return w.fail(err)
	}
	if err := w.writeIndex(ctx, 1); err != nil {
		return w.fail(err)
	}
	for _, pi := range todo {
		if err := w.reloadPage(ctx, pi); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// reloadPage makes stored page pi a page in memory again.
func (w *SnapshotWriter) reloadPage(ctx context.Context, pi uint64) error {
	w.mu.Lock()
	id := w.stored[pi]
	w.mu.Unlock()
	pg := make([]ID, w.pageLen(pi))
	if !id.IsZero() {
		data, err := w.r.loadBlobFrom(ctx, w.r.idx, BlobPage, id)
		if err != nil {
			return err
		}
		if err := decodePageInto(data, pg); err != nil {
			return fmt.Errorf("repo: page %d stored by this backup: %w", pi, err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.stored, pi)
	w.pages[pi], w.dirty[pi] = pg, true
	return nil
}
