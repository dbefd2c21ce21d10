package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/blockwise/blockwise/internal/repo"
)

// ErrAmbiguousPoint: a restore point ID prefix matches several points.
var ErrAmbiguousPoint = errors.New("restore point prefix is ambiguous")

// This file is the one definition of "the latest restore point": the
// newest by time, equal times broken by the greater ID (Newer), so that
// every reader (a backup choosing its parent, `restore latest`, the demo)
// picks the same point.

// Newer reports whether a is a newer restore point than b: a later time,
// or the same time and the greater ID.
func Newer(a, b repo.Head) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	return a.ID.String() > b.ID.String()
}

// LatestFor is the newest restore point of the disk (same name and
// identity) in the repository, or nil.
func LatestFor(ctx context.Context, r *repo.Repository, disk, uuid string) (*repo.Manifest, error) {
	return latest(ctx, r, func(m repo.Meta) bool { return m.Disk == disk && m.DiskUUID == uuid })
}

// Latest is the newest restore point of the disk named disk, whatever its
// identity ("": of any disk), or nil.
func Latest(ctx context.Context, r *repo.Repository, disk string) (*repo.Manifest, error) {
	return latest(ctx, r, func(m repo.Meta) bool { return disk == "" || m.Disk == disk })
}

// FindPoint resolves ref, "latest" (Latest of disk) or a restore point ID
// prefix (of disk, when given), to its manifest. None is repo.ErrNotFound;
// a prefix matching several is ErrAmbiguousPoint.
func FindPoint(ctx context.Context, r *repo.Repository, ref, disk string) (*repo.Manifest, error) {
	if ref == "latest" {
		m, err := Latest(ctx, r, disk)
		if err == nil && m == nil {
			err = fmt.Errorf("restore point %q: %w", ref, repo.ErrNotFound)
		}
		return m, err
	}
	heads, err := r.Heads(ctx)
	if err != nil {
		return nil, err
	}
	var found []repo.Head
	for _, h := range heads {
		if (disk == "" || h.Disk == disk) && strings.HasPrefix(h.ID.String(), ref) {
			found = append(found, h)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("restore point %q: %w", ref, repo.ErrNotFound)
	case 1:
		m, err := r.LoadManifest(ctx, found[0].ID)
		if err == nil && disk != "" && m.Disk != disk { // a damaged head cache
			err = fmt.Errorf("restore point %q of %s: %w", ref, disk, repo.ErrNotFound)
		}
		return m, err
	}
	return nil, fmt.Errorf("%w: %q (%d matches)", ErrAmbiguousPoint, ref, len(found))
}

// latest is the newest restore point whose head keep accepts, or nil. It
// reads the (cached) heads and loads one manifest; when that manifest
// does not match its cached head it answers from the manifests
// themselves.
func latest(ctx context.Context, r *repo.Repository, keep func(repo.Meta) bool) (*repo.Manifest, error) {
	heads, err := r.Heads(ctx)
	if err != nil {
		return nil, err
	}
	best := pickLatest(heads, keep)
	if best == nil {
		return nil, nil
	}
	m, err := r.LoadManifest(ctx, best.ID)
	if err != nil {
		return nil, err
	}
	if !sameMeta(m.Meta, best.Meta) { // a damaged cache: ask the manifests
		return latestLoaded(ctx, r, keep)
	}
	return m, nil
}

// pickLatest is the newest of heads that keep accepts, or nil.
func pickLatest(heads []repo.Head, keep func(repo.Meta) bool) *repo.Head {
	var best *repo.Head
	for i, h := range heads {
		if keep(h.Meta) && (best == nil || Newer(h, *best)) {
			best = &heads[i]
		}
	}
	return best
}

func sameMeta(a, b repo.Meta) bool {
	return a.Disk == b.Disk && a.DiskUUID == b.DiskUUID && a.ChangeID == b.ChangeID && a.Size == b.Size && a.Time.Equal(b.Time)
}

// latestLoaded is latest from the manifests themselves.
func latestLoaded(ctx context.Context, r *repo.Repository, keep func(repo.Meta) bool) (*repo.Manifest, error) {
	var best *repo.Manifest
	err := r.EachManifest(ctx, func(m *repo.Manifest) error {
		if keep(m.Meta) && (best == nil || Newer(m.Head(), best.Head())) {
			best = m
		}
		return nil
	})
	return best, err
}
