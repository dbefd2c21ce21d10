package fileres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf16"
)

// FAT12/16/32 reader. A FAT volume has no inodes: a file's number is the
// byte offset of its directory entry in the volume, the root's is 1.

type fatFS struct {
	r        io.ReaderAt
	size     int64
	bits     int   // 12, 16 or 32
	cluster  int64 // bytes
	fat      int64 // byte offset of the first FAT
	rootOff  int64 // FAT12/16: fixed root directory
	rootLen  int64
	rootClus uint32
	data     int64 // byte offset of cluster 2
	clusters uint32
}

const fatRoot = 1

// openFAT reads a FAT boot sector at the start of r.
func openFAT(r io.ReaderAt, size int64) (*fatFS, error) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, damaged("fat: boot sector unreadable: %v", err)
	}
	le := binary.LittleEndian
	bps, spc := int64(le.Uint16(b[11:])), int64(b[13])
	rsvd, nfat, rootEnt := int64(le.Uint16(b[14:])), int64(b[16]), int64(le.Uint16(b[17:]))
	tot := int64(le.Uint16(b[19:]))
	if tot == 0 {
		tot = int64(le.Uint32(b[32:]))
	}
	fsz := int64(le.Uint16(b[22:]))
	if fsz == 0 {
		fsz = int64(le.Uint32(b[36:]))
	}
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 || rsvd == 0 || nfat == 0 || fsz == 0 {
		return nil, damaged("fat: boot sector geometry (%d bytes/sector, %d sectors/cluster, %d FATs)", bps, spc, nfat)
	}
	rootSec := (rootEnt*32 + bps - 1) / bps
	meta := rsvd + nfat*fsz + rootSec
	if tot <= meta || tot*bps > size+bps {
		return nil, damaged("fat: %d sectors of %d bytes do not fit a %d-byte volume", tot, bps, size)
	}
	f := &fatFS{r: r, size: size, cluster: bps * spc, fat: rsvd * bps, rootOff: (rsvd + nfat*fsz) * bps, rootLen: rootSec * bps, data: meta * bps}
	f.clusters = uint32((tot - meta) / spc)
	switch {
	case f.clusters < 4085:
		f.bits = 12
	case f.clusters < 65525:
		f.bits = 16
	default:
		f.bits, f.rootClus = 32, le.Uint32(b[44:])&0x0FFFFFFF
	}
	if int64(f.clusters+2)*int64(f.bits)/8 > fsz*bps {
		return nil, damaged("fat: a FAT of %d bytes for %d clusters", fsz*bps, f.clusters)
	}
	return f, nil
}

// Type implements FS.
func (f *fatFS) Type() string { return fmt.Sprintf("vfat (FAT%d)", f.bits) }

// Root implements FS.
func (f *fatFS) Root() uint64 { return fatRoot }

// next returns the FAT entry of cluster c.
func (f *fatFS) next(c uint32) (uint32, error) {
	var b [4]byte
	switch f.bits {
	case 32:
		if _, err := f.r.ReadAt(b[:4], f.fat+int64(c)*4); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF, nil
	case 16:
		if _, err := f.r.ReadAt(b[:2], f.fat+int64(c)*2); err != nil {
			return 0, err
		}
		return uint32(binary.LittleEndian.Uint16(b[:])), nil
	}
	if _, err := f.r.ReadAt(b[:2], f.fat+int64(c)*3/2); err != nil {
		return 0, err
	}
	v := uint32(binary.LittleEndian.Uint16(b[:]))
	if c&1 != 0 {
		return v >> 4, nil
	}
	return v & 0xFFF, nil
}

func (f *fatFS) eoc(c uint32) bool {
	switch f.bits {
	case 12:
		return c >= 0xFF8
	case 16:
		return c >= 0xFFF8
	}
	return c >= 0x0FFFFFF8
}

// chain returns the clusters of a file from first, at most limit of
// them; a cluster out of range or a loop (more than limit) is damage.
func (f *fatFS) chain(first uint32, limit int64) ([]uint32, error) {
	var out []uint32
	for c := first; c != 0 && !f.eoc(c); {
		if c < 2 || c >= f.clusters+2 {
			return nil, damaged("fat: cluster %d out of range", c)
		}
		if int64(len(out)) >= limit {
			return nil, damaged("fat: cluster chain from %d longer than its file (a loop?)", first)
		}
		out = append(out, c)
		n, err := f.next(c)
		if err != nil {
			return nil, err
		}
		c = n
	}
	return out, nil
}

// fatFile reads a file's clusters; bytes past the chain's end are an error.
type fatFile struct {
	f    *fatFS
	size int64
	off  int64 // FAT12/16 root directory: a fixed region
	clus []uint32
}

// Size implements File.
func (x *fatFile) Size() int64 { return x.size }

// Extents implements File: FAT has no holes.
func (x *fatFile) Extents(context.Context) ([]Extent, error) {
	if x.size == 0 {
		return nil, nil
	}
	return []Extent{{0, x.size}}, nil
}

// ReadAt implements io.ReaderAt through the cluster chain.
func (x *fatFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fat: negative offset: %w", ErrDamaged)
	}
	if off >= x.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), x.size-off)
	cs := x.f.cluster
	for done := int64(0); done < want; {
		pos := off + done
		var at, n int64
		if x.clus == nil {
			at, n = x.off+pos, want-done
		} else {
			i := pos / cs
			if i >= int64(len(x.clus)) {
				return int(done), damaged("fat: file shorter than its size")
			}
			at, n = x.f.data+int64(x.clus[i]-2)*cs+pos%cs, min(want-done, cs-pos%cs)
		}
		if _, err := x.f.r.ReadAt(p[done:done+n], at); err != nil {
			return int(done), err
		}
		done += n
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// entry reads the 32-byte directory entry at ino.
func (f *fatFS) entry(ino uint64) ([]byte, error) {
	if ino < 32 || ino%32 != 0 || int64(ino) > f.size-32 {
		return nil, damaged("fat: no directory entry at %d", ino)
	}
	b := make([]byte, 32)
	_, err := f.r.ReadAt(b, int64(ino))
	return b, err
}

func fatTime(d, t uint16) time.Time {
	if d == 0 {
		return time.Unix(0, 0).UTC()
	}
	return time.Date(1980+int(d>>9), time.Month(d>>5&15), int(d&31), int(t>>11), int(t>>5&63), int(t&31)*2, 0, time.UTC)
}

// Stat implements FS: FAT has no owners, and times in two-second steps.
func (f *fatFS) Stat(_ context.Context, ino uint64) (Node, error) {
	if ino == fatRoot {
		return Node{Ino: fatRoot, Mode: ModeDir | 0o755, Nlink: 2, Mtime: time.Unix(0, 0).UTC(), Atime: time.Unix(0, 0).UTC(), Ctime: time.Unix(0, 0).UTC()}, nil
	}
	e, err := f.entry(ino)
	if err != nil {
		return Node{}, err
	}
	le := binary.LittleEndian
	n := Node{Ino: ino, Nlink: 1, Mode: ModeRegular | 0o644, Size: int64(le.Uint32(e[28:]))}
	if e[11]&0x10 != 0 {
		n.Mode, n.Size, n.Nlink = ModeDir|0o755, 0, 2
	} else if e[11]&0x01 != 0 {
		n.Mode = ModeRegular | 0o444
	}
	n.Mtime = fatTime(le.Uint16(e[24:]), le.Uint16(e[22:]))
	n.Ctime = fatTime(le.Uint16(e[16:]), le.Uint16(e[14:]))
	n.Atime = fatTime(le.Uint16(e[18:]), 0)
	return n, nil
}

// Open implements FS.
func (f *fatFS) Open(ctx context.Context, ino uint64) (File, error) {
	if ino == fatRoot {
		return f.rootFile()
	}
	e, err := f.entry(ino)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	first := uint32(le.Uint16(e[26:])) | uint32(le.Uint16(e[20:]))<<16
	size := int64(le.Uint32(e[28:]))
	limit := (size + f.cluster - 1) / f.cluster
	if e[11]&0x10 != 0 { // a directory's size is its chain's
		limit = min(int64(f.clusters), maxDirBytes/f.cluster)
	}
	clus, err := f.chain(first, limit)
	if err != nil {
		return nil, err
	}
	if e[11]&0x10 != 0 {
		size = int64(len(clus)) * f.cluster
	} else if int64(len(clus))*f.cluster < size {
		return nil, damaged("fat: file at %d: %d clusters for %d bytes", ino, len(clus), size)
	}
	return &fatFile{f: f, size: size, clus: clus}, nil
}

func (f *fatFS) rootFile() (File, error) {
	if f.bits != 32 {
		return &fatFile{f: f, size: f.rootLen, off: f.rootOff}, nil
	}
	clus, err := f.chain(f.rootClus, min(int64(f.clusters), maxDirBytes/f.cluster))
	if err != nil {
		return nil, err
	}
	return &fatFile{f: f, size: int64(len(clus)) * f.cluster, clus: clus}, nil
}

// Readlink implements FS: FAT has no symlinks.
func (f *fatFS) Readlink(context.Context, uint64) (string, error) {
	return "", unsupported("fat: no symlinks")
}

// ReadDir implements FS.
func (f *fatFS) ReadDir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	n, err := f.Stat(ctx, ino)
	if err != nil {
		return nil, err
	}
	if !n.IsDir() {
		return nil, fmt.Errorf("fat: entry %d: %w", ino, ErrNotDir)
	}
	file, err := f.Open(ctx, ino)
	if err != nil {
		return nil, err
	}
	ff := file.(*fatFile)
	data := make([]byte, ff.size)
	if _, err := ff.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return f.parseDir(ff, data), nil
}

// parseDir decodes 32-byte entries, joining long-name entries whose
// checksum matches the short entry that follows them.
func (f *fatFS) parseDir(ff *fatFile, data []byte) []DirEntry {
	var out []DirEntry
	var lfn []uint16
	var sum byte
	for i := 0; i+32 <= len(data); i += 32 {
		e := data[i : i+32]
		switch {
		case e[0] == 0:
			return out
		case e[0] == 0xE5:
			lfn = nil
			continue
		case e[11]&0x3F == 0x0F:
			lfn, sum = fatLFN(lfn, e, sum)
			continue
		case e[11]&0x08 != 0: // volume label
			lfn = nil
			continue
		}
		name := fatShortName(e)
		if lfn != nil && fatChecksum(e) == sum {
			name = decodeLFN(lfn)
		}
		lfn = nil
		if name == "." || name == ".." || name == "" {
			continue
		}
		out = append(out, DirEntry{Name: name, Ino: uint64(ff.posOf(int64(i)))})
	}
	return out
}

// posOf is the volume byte offset of the directory's byte off.
func (x *fatFile) posOf(off int64) int64 {
	if x.clus == nil {
		return x.off + off
	}
	return x.f.data + int64(x.clus[off/x.f.cluster]-2)*x.f.cluster + off%x.f.cluster
}

// fatLFN adds a long-name entry (they come last part first).
func fatLFN(lfn []uint16, e []byte, sum byte) ([]uint16, byte) {
	if e[0]&0x40 != 0 {
		lfn, sum = []uint16{}, e[13]
	} else if lfn == nil || e[13] != sum || len(lfn) >= 20*13 { // 20 parts hold the longest name, 255
		return nil, 0
	}
	var part []uint16
	for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
		for j := r[0]; j < r[1]; j += 2 {
			part = append(part, binary.LittleEndian.Uint16(e[j:]))
		}
	}
	return append(part, lfn...), sum
}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

func fatChecksum(e []byte) byte {
	var s byte
	for _, c := range e[:11] {
		s = (s>>1 | s<<7) + c
	}
	return s
}

func fatShortName(e []byte) string {
	b := append([]byte(nil), e[:11]...)
	if b[0] == 0x05 {
		b[0] = 0xE5
	}
	base, ext := strings.TrimRight(string(b[:8]), " "), strings.TrimRight(string(b[8:11]), " ")
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext != "" {
		return base + "." + ext
	}
	return base
}
