package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"
	"golang.org/x/sync/errgroup"
)

// LoadManifest reads and verifies one manifest.
func (r *Repository) LoadManifest(ctx context.Context, id ID) (*Manifest, error) {
	h := backend.Handle{Type: backend.Manifests, Name: id.String()}
	data, err := backend.LoadAll(ctx, r.be, h, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("repo: manifest %v: %w", id.Short(), translate(err))
	}
	if fileID(data) != id {
		return nil, fmt.Errorf("repo: manifest %v: content hash mismatch: %w", id.Short(), ErrCorrupt)
	}
	m, err := decodeManifest(r.crypt, r.cfg, data)
	if err != nil {
		return nil, fmt.Errorf("repo: manifest %v: %w", id.Short(), err)
	}
	return m, nil
}

// ListManifests returns every restore point, oldest first.
func (r *Repository) ListManifests(ctx context.Context) ([]*Manifest, error) {
	names, err := r.listNames(ctx, backend.Manifests)
	if err != nil {
		return nil, err
	}
	// Loaded several at a time: on an object store each is a round trip,
	// and a backup lists them all to find its parent.
	loaded := make([]*Manifest, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestLoaders)
	for i, n := range names {
		g.Go(func() error {
			id, err := ParseID(n)
			if err != nil {
				return fmt.Errorf("repo: manifest file %q: %w", n, ErrCorrupt)
			}
			loaded[i], err = r.LoadManifest(gctx, id)
			if errors.Is(err, ErrNotFound) {
				return nil // forgotten while we listed
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	ms := slices.DeleteFunc(loaded, func(m *Manifest) bool { return m == nil })
	slices.SortFunc(ms, func(a, b *Manifest) int { return a.Time.Compare(b.Time) })
	return ms, nil
}

// manifestLoaders bounds the manifests loaded at once.
const manifestLoaders = 16

// Forget removes a restore point. Its data stays until Prune. Forgetting
// a parent does not harm its children: each manifest lists every page of
// its own image.
func (r *Repository) Forget(ctx context.Context, id ID) error {
	l, err := r.Lock(ctx, false)
	if err != nil {
		return err
	}
	defer l.Unlock(context.WithoutCancel(ctx))
	err = r.be.Remove(ctx, backend.Handle{Type: backend.Manifests, Name: id.String()})
	if err != nil {
		return fmt.Errorf("repo: forget %v: %w", id.Short(), translate(err))
	}
	return nil
}
