package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

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
	var ms []*Manifest
	err := r.EachManifest(ctx, func(m *Manifest) error {
		ms = append(ms, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ms, func(a, b *Manifest) int { return a.Time.Compare(b.Time) })
	return ms, nil
}

// EachManifest calls fn with every restore point, in no set order, one
// call at a time. Manifests are loaded several at a time (on an object
// store each is a round trip, and a backup looks at them all to find its
// parent) and only those in flight are held: a manifest lists a page ID
// per 128 MiB of disk, so all of a large repository's would not be small.
func (r *Repository) EachManifest(ctx context.Context, fn func(*Manifest) error) error {
	ids, _, err := r.manifestIDs(ctx)
	if err != nil {
		return err
	}
	return r.loadManifests(ctx, ids, fn)
}

// manifestIDs lists the restore points: their IDs and file names.
func (r *Repository) manifestIDs(ctx context.Context) ([]ID, []string, error) {
	names, err := r.listNames(ctx, backend.Manifests)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]ID, len(names))
	for i, n := range names {
		if ids[i], err = ParseID(n); err != nil {
			return nil, nil, fmt.Errorf("repo: manifest file %q: %w", n, ErrCorrupt)
		}
	}
	return ids, names, nil
}

// loadManifests loads manifests manifestLoaders at a time and hands each
// to fn, one call at a time; one forgotten meanwhile is skipped.
func (r *Repository) loadManifests(ctx context.Context, ids []ID, fn func(*Manifest) error) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestLoaders)
	for _, id := range ids {
		g.Go(func() error {
			m, err := r.LoadManifest(gctx, id)
			if errors.Is(err, ErrNotFound) {
				return nil
			} else if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return fn(m)
		})
	}
	return g.Wait()
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
