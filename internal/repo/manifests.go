package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"
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
	var ms []*Manifest
	for _, n := range names {
		id, err := ParseID(n)
		if err != nil {
			return nil, fmt.Errorf("repo: manifest file %q: %w", n, ErrCorrupt)
		}
		m, err := r.LoadManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // forgotten while we listed
		} else if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *Manifest) int { return a.Time.Compare(b.Time) })
	return ms, nil
}

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
