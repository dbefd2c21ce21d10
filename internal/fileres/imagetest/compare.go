package imagetest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// CompareOptions say what a comparison can expect of the copy.
type CompareOptions struct {
	NoOwners   bool // the copy's owners are not the source's (FAT)
	NoHardLink bool // hard links come out as copies (FAT, FUSE without inode numbers)
	TimeStep   int64
	// Sparse: the copy's holes must be holes (SEEK_DATA finds the same
	// data stretches), not only read as zeros.
	Sparse bool
}

// CompareTree checks that dst holds src byte for byte with the same
// types, permission bits, owners, modification times (to the second when
// opts say the filesystem keeps less), symlink targets and hard links.
// Files over 64 MiB are compared on their data stretches and a sample of
// their holes.
func CompareTree(t testing.TB, src, dst string, o CompareOptions) {
	t.Helper()
	links := map[uint64]string{}
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		d := filepath.Join(dst, rel)
		n++
		if err := compareOne(p, d, fi, o); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 && !o.NoHardLink {
			if first, ok := links[st.Ino]; ok {
				a, b := statT(filepath.Join(dst, first)), statT(d)
				if a == nil || b == nil || a.Ino != b.Ino {
					return fmt.Errorf("%s: not a hard link of %s in the copy", rel, first)
				}
			}
			links[st.Ino] = rel
		}
		return nil
	})
	if err != nil {
		t.Fatalf("compare %s with %s: %v", src, dst, err)
	}
	if n < 5 {
		t.Fatalf("compare: only %d files in %s", n, src)
	}
}

func statT(p string) *syscall.Stat_t {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil
	}
	return fi.Sys().(*syscall.Stat_t)
}

func compareOne(p, d string, fi os.FileInfo, o CompareOptions) error {
	di, err := os.Lstat(d)
	if err != nil {
		return err
	}
	if fi.Mode().Type() != di.Mode().Type() {
		return fmt.Errorf("type %v, copy %v", fi.Mode().Type(), di.Mode().Type())
	}
	if fi.Mode().Type()&os.ModeSymlink == 0 && fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != di.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) {
		return fmt.Errorf("mode %v, copy %v", fi.Mode(), di.Mode())
	}
	s, c := fi.Sys().(*syscall.Stat_t), di.Sys().(*syscall.Stat_t)
	if !o.NoOwners && (s.Uid != c.Uid || s.Gid != c.Gid) {
		return fmt.Errorf("owner %d:%d, copy %d:%d", s.Uid, s.Gid, c.Uid, c.Gid)
	}
	step := max(o.TimeStep, 1)
	if !fi.IsDir() && fi.ModTime().UnixNano()/step != di.ModTime().UnixNano()/step {
		return fmt.Errorf("mtime %v, copy %v", fi.ModTime(), di.ModTime())
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		a, _ := os.Readlink(p)
		b, err := os.Readlink(d)
		if err != nil || a != b {
			return fmt.Errorf("symlink to %q, copy to %q (%v)", a, b, err)
		}
	case fi.Mode()&os.ModeDevice != 0:
		if s.Rdev != c.Rdev {
			return fmt.Errorf("device %x, copy %x", s.Rdev, c.Rdev)
		}
	case fi.Mode().IsRegular():
		if fi.Size() != di.Size() {
			return fmt.Errorf("size %d, copy %d", fi.Size(), di.Size())
		}
		return sameContent(p, d, fi.Size(), o.Sparse)
	}
	return nil
}

// sameContent compares two files: whole when small, else their data
// stretches (found with SEEK_DATA in the source) and a sample of holes.
func sameContent(p, d string, size int64, sparse bool) error {
	a, err := os.Open(p)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(d)
	if err != nil {
		return err
	}
	defer b.Close()
	if size <= 64<<20 {
		x, _ := io.ReadAll(a)
		y, err := io.ReadAll(b)
		if err != nil || !bytes.Equal(x, y) {
			return fmt.Errorf("content differs (%v)", err)
		}
		return nil
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(a.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // no more data
		}
		hole, _ := unix.Seek(int(a.Fd()), data, unix.SEEK_HOLE)
		if off < data {
			if err := sameRange(a, b, off, min(data-off, 1<<20)); err != nil { // the start of a hole
				return err
			}
		}
		if err := sameRange(a, b, data, hole-data); err != nil {
			return err
		}
		if sparse {
			if got, err := unix.Seek(int(b.Fd()), off, unix.SEEK_DATA); err != nil || got > data {
				return fmt.Errorf("copy's data at %d, source's at %d (%v)", got, data, err)
			}
		}
		off = hole
	}
	return nil
}

func sameRange(a, b *os.File, off, n int64) error {
	x, y := make([]byte, n), make([]byte, n)
	if _, err := a.ReadAt(x, off); err != nil && err != io.EOF {
		return err
	}
	if _, err := b.ReadAt(y, off); err != nil && err != io.EOF {
		return err
	}
	if !bytes.Equal(x, y) {
		return fmt.Errorf("content differs in %d bytes at %d", n, off)
	}
	return nil
}
