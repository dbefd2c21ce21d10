package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// Backend is a directory-backed backend.Backend.
type Backend struct {
	root string
}

var _ backend.Backend = (*Backend)(nil)

// Open creates (if needed) and opens a repository directory.
func Open(dir string) (*Backend, error) {
	b := &Backend{root: dir}
	for _, t := range backend.Types {
		if t == backend.Config {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, string(t)), 0o700); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	removeStaleTemp(filepath.Join(dir, "tmp"))
	return b, nil
}

// staleTemp is the age past which a temporary file can only be the
// partial write of a crashed process: longer than any single Save takes,
// so a backup running in another process never loses a pack in flight.
const staleTemp = time.Hour

func removeStaleTemp(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func (b *Backend) path(h backend.Handle) string {
	switch h.Type {
	case backend.Config:
		return filepath.Join(b.root, "config")
	case backend.Data:
		return filepath.Join(b.root, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(b.root, string(h.Type), h.Name)
}

// mapErr turns OS errors into the contract's sentinels.
func mapErr(op string, h backend.Handle, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("local: %s %v: %w", op, h, backend.ErrNotFound)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("local: %s %v: %w", op, h, backend.ErrExists)
	}
	return fmt.Errorf("local: %s %v: %w", op, h, err)
}

// Save implements backend.Backend.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	final := b.path(h)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return mapErr("save", h, err)
	}
	tmp, err := b.writeTemp(data)
	if err != nil {
		return mapErr("save", h, err)
	}
	defer os.Remove(tmp)
	// link(2) never replaces an existing name: this is the no-replace
	// rename. The tmp name is removed by the deferred call.
	if err := os.Link(tmp, final); err != nil {
		return mapErr("save", h, err)
	}
	return mapErr("save", h, syncDir(filepath.Dir(final)))
}

func (b *Backend) writeTemp(data []byte) (string, error) {
	tf, err := os.CreateTemp(filepath.Join(b.root, "tmp"), "save-")
	if err != nil {
		return "", err
	}
	// Packs are written once and read rarely: around the page cache.
	f := fsutil.NewDirect(tf)
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := h.Valid(); err != nil {
		return nil, err
	}
	f, err := os.Open(b.path(h))
	if err != nil {
		return nil, mapErr("load", h, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, mapErr("load", h, err)
	}
	n, err := backend.CheckRange(h, fi.Size(), offset, length)
	if err != nil {
		f.Close()
		return nil, err
	}
	return sectionCloser{io.NewSectionReader(f, offset, n), f}, nil
}

type sectionCloser struct {
	*io.SectionReader
	io.Closer
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := os.Stat(b.path(h))
	if err != nil {
		return backend.FileInfo{}, mapErr("stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.Config {
		fi, err := b.Stat(ctx, backend.Handle{Type: backend.Config, Name: "config"})
		if errors.Is(err, backend.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		return fn(fi)
	}
	dir := filepath.Join(b.root, string(t))
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while listing
		} else if err != nil {
			return err
		}
		return fn(backend.FileInfo{Name: d.Name(), Size: info.Size()})
	})
}

// Remove implements backend.Backend.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return err
	}
	p := b.path(h)
	if err := os.Remove(p); err != nil {
		return mapErr("remove", h, err)
	}
	return mapErr("remove", h, syncDir(filepath.Dir(p)))
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }
