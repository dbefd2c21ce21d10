package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// Backend is a directory-backed backend.Backend.
type Backend struct {
	root string
	fs   vfs.FS
}

var _ backend.Backend = (*Backend)(nil)

// Option configures Open.
type Option func(*Backend)

// WithFS puts the repository on fsys instead of the operating system's
// file system: tests run the writer on a vfstest.CrashFS to cut the power
// under it (docs/repository.md, invariants R1-R4).
func WithFS(fsys vfs.FS) Option { return func(b *Backend) { b.fs = fsys } }

// Open creates (if needed) and opens a repository directory. Every
// directory it makes is synced into its parent (docs/repository.md,
// invariant R2): a directory not yet durable would take the files saved
// in it along in a power loss.
func Open(dir string, opts ...Option) (*Backend, error) {
	b := &Backend{root: dir, fs: vfs.Default}
	for _, o := range opts {
		o(b)
	}
	for _, t := range backend.Types {
		if t == backend.Config {
			continue
		}
		if err := vfs.MkdirAllSync(b.fs, filepath.Join(dir, string(t)), 0o700); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	if err := vfs.MkdirAllSync(b.fs, filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	b.removeStaleTemp(filepath.Join(dir, "tmp"))
	return b, nil
}

// staleTemp is the age past which a temporary file can only be the
// partial write of a crashed process: longer than any single Save takes,
// so a backup running in another process never loses a pack in flight.
const staleTemp = time.Hour

func (b *Backend) removeStaleTemp(dir string) {
	ents, err := b.fs.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			b.fs.Remove(filepath.Join(dir, e.Name()))
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

// Save implements backend.Backend: temp file, fsync, link, fsync of the
// directory (and of a fan-out directory it had to make), so that a Save
// that returned survives a power loss (docs/repository.md, invariant R2).
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	final := b.path(h)
	if err := vfs.MkdirAllSync(b.fs, filepath.Dir(final), 0o700); err != nil {
		return mapErr("save", h, err)
	}
	tmp, err := b.writeTemp(data)
	if err != nil {
		return mapErr("save", h, err)
	}
	defer b.fs.Remove(tmp)
	// link(2) never replaces an existing name: this is the no-replace
	// rename. The tmp name is removed by the deferred call.
	if err := vfs.Link(b.fs, tmp, final); err != nil {
		return mapErr("save", h, err)
	}
	return mapErr("save", h, vfs.SyncDir(b.fs, filepath.Dir(final)))
}

func (b *Backend) writeTemp(data []byte) (string, error) {
	f, err := b.createTemp()
	if err != nil {
		return "", err
	}
	if of, ok := f.(*os.File); ok {
		// Packs are written once and read rarely: around the page cache.
		f = fsutil.NewDirect(of)
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.fs.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// createTemp makes a new file in tmp/, as os.CreateTemp does.
func (b *Backend) createTemp() (vfs.File, error) {
	for range 10000 {
		name := filepath.Join(b.root, "tmp", "save-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := b.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("local: no free temporary name: %w", fs.ErrExist)
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := h.Valid(); err != nil {
		return nil, err
	}
	f, err := vfs.Open(b.fs, b.path(h))
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
	fi, err := b.fs.Stat(b.path(h))
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
	return b.walk(ctx, filepath.Join(b.root, string(t)), fn)
}

// walk lists the files below dir (data/ has its fan-out directories),
// skipping dot files.
func (b *Backend) walk(ctx context.Context, dir string, fn func(backend.FileInfo) error) error {
	ents, err := b.fs.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if e.IsDir() {
			err = b.walk(ctx, filepath.Join(dir, e.Name()), fn)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil // removed while listing
			}
		} else if info, ierr := e.Info(); errors.Is(ierr, fs.ErrNotExist) {
			continue // removed while listing
		} else if ierr != nil {
			err = ierr
		} else {
			err = fn(backend.FileInfo{Name: e.Name(), Size: info.Size()})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Remove implements backend.Backend.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if err := h.Valid(); err != nil {
		return err
	}
	p := b.path(h)
	if err := b.fs.Remove(p); err != nil {
		return mapErr("remove", h, err)
	}
	return mapErr("remove", h, vfs.SyncDir(b.fs, filepath.Dir(p)))
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }
