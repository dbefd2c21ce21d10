package repo

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
)

// Heads are cached in Options.CacheDir/<repository ID>/heads/<manifest
// ID> (no cache when CacheDir is ""). A manifest never changes (its name
// is its hash), so a cached head is never stale; a head whose manifest is
// gone is dropped.

// Head is what identifies a restore point: enough to pick a backup's
// parent without loading every manifest (each lists a page ID per
// 128 MiB of disk, and on an object store each is a round trip).
type Head struct {
	ID ID `json:"id"`
	Meta
}

// Head returns m's head.
func (m *Manifest) Head() Head { return Head{ID: m.ID, Meta: m.Meta} }

// Heads returns the head of every restore point, in no set order. Heads
// in the cache are not loaded again; the others are loaded 16 at a time
// and cached. A cache that cannot be read or written is skipped: it only
// saves loads.
func (r *Repository) Heads(ctx context.Context) ([]Head, error) {
	ids, names, err := r.manifestIDs(ctx)
	if err != nil {
		return nil, err
	}
	dir := r.headsDir()
	var heads []Head
	var missing []ID
	for _, id := range ids {
		if h, ok := readHead(dir, id); ok {
			heads = append(heads, h)
		} else {
			missing = append(missing, id)
		}
	}
	err = r.loadManifests(ctx, missing, func(m *Manifest) error {
		h := m.Head()
		writeHead(dir, h)
		heads = append(heads, h)
		return nil
	})
	if err != nil {
		return nil, err
	}
	pruneHeads(dir, names)
	return heads, nil
}

func (r *Repository) headsDir() string {
	if r.opts.CacheDir == "" || r.cfg.ID == "" {
		return ""
	}
	return filepath.Join(r.opts.CacheDir, filepath.Base(r.cfg.ID), "heads")
}

func readHead(dir string, id ID) (Head, bool) {
	if dir == "" {
		return Head{}, false
	}
	data, err := os.ReadFile(filepath.Join(dir, id.String()))
	if err != nil {
		return Head{}, false
	}
	return decodeHead(data, id)
}

// decodeHead parses a cached head, which must be manifest id's. The cache
// lives outside the repository, so anything may be found there; a head
// that does not parse is not used (and the chosen parent is checked
// against its manifest anyway).
func decodeHead(data []byte, id ID) (Head, bool) {
	var h Head
	if json.Unmarshal(data, &h) != nil || h.ID != id {
		return Head{}, false
	}
	return h, true
}

// writeHead stores h by temp file and rename, so a reader never sees half
// a head; it is a cache, so there is no fsync.
func writeHead(dir string, h Head) {
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	data, err := json.Marshal(h)
	if err != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil {
		os.Remove(f.Name())
		return
	}
	if os.Rename(f.Name(), filepath.Join(dir, h.ID.String())) != nil {
		os.Remove(f.Name())
	}
}

// pruneHeads removes cached heads whose manifests were not listed.
func pruneHeads(dir string, names []string) {
	if dir == "" {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	live := make(map[string]bool, len(names))
	for _, n := range names {
		live[n] = true
	}
	for _, e := range entries {
		if !live[e.Name()] {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
