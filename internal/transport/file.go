package transport

import (
	"context"
	"os"

	"github.com/blockwise/blockwise/internal/fsutil"
)

// FileTarget is a restore target that is a sparse raw image file
// (restore --to): zero chunks become holes, the data goes around the page
// cache (it is written once).
type FileTarget struct{ f *fsutil.DirectFile }

var _ Target = (*FileTarget)(nil)

// CreateFile creates the raw image file path (which must not exist) of
// size bytes, all of it a hole, as a restore target. A restore into it may
// pass TargetIsZero.
func CreateFile(path string, size int64) (*FileTarget, error) {
	f, err := fsutil.OpenDirect(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &FileTarget{f}, nil
}

// Mode names the target kind in reports.
func (t *FileTarget) Mode() string { return "file" }

// WriteAt writes p at off.
func (t *FileTarget) WriteAt(_ context.Context, p []byte, off int64) error {
	_, err := t.f.WriteAt(p, off)
	return err
}

// ReadAt reads len(p) bytes at off (a restore's read-back).
func (t *FileTarget) ReadAt(_ context.Context, p []byte, off int64) error {
	return fsutil.ReadFull(t.f.File, p, off)
}

// Zero punches a hole over [off, off+n).
func (t *FileTarget) Zero(_ context.Context, off, n int64) error {
	return fsutil.PunchHole(t.f.File, off, n)
}

// Flush syncs the file.
func (t *FileTarget) Flush(context.Context) error { return t.f.Sync() }

// Close closes the file.
func (t *FileTarget) Close() error { return t.f.Close() }

// Size is the file's size (0 when it cannot be read).
func (t *FileTarget) Size() int64 {
	st, err := t.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}
