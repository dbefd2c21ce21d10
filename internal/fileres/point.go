package fileres

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Volume is a partition, a whole disk or a logical volume of a point.
type Volume struct {
	Name  string // path component: "part1", "disk", "vg0-root"
	Path  string // from the point's root: "part3/vg0-root"
	Start int64  // byte offset in the image (partitions)
	Size  int64
	Desc  string // partition type, and what was found on it
	FS    FS     // nil when Err or Sub is set
	Err   error  // a *VolumeError: unsupported or damaged
	Sub   []*Volume
	r     io.ReaderAt
}

// Point is the browsable tree of one restore point's image: volumes at
// the top, their filesystems under them.
type Point struct {
	Time    time.Time
	Table   string // "gpt", "mbr" or "" (no partition table); a GPT read from its backup header says so
	Volumes []*Volume
	dirs    dirCache
}

// Open finds the partitions, logical volumes and filesystems of an image
// read through r. A volume that cannot be read carries its error; only a
// damaged partition table fails Open.
func Open(ctx context.Context, r io.ReaderAt, size int64, t time.Time) (*Point, error) {
	parts, table, ok, err := ReadPartitions(r, size)
	if err != nil {
		return nil, &VolumeError{Volume: "disk", Found: "partition table", Err: err}
	}
	p := &Point{Time: t, Table: table, dirs: dirCache{max: dirCacheEntries}}
	if !ok {
		parts = []Partition{{Index: 0, Size: size, Type: "whole disk"}}
	}
	pvs := map[string]io.ReaderAt{}
	var metas []*Volume // PV partitions with metadata, their LVs found after all PVs are
	for _, pt := range parts {
		v := &Volume{Name: fmt.Sprintf("part%d", pt.Index), Start: pt.Start, Size: pt.Size, Desc: pt.Type,
			r: io.NewSectionReader(r, pt.Start, pt.Size)}
		if !ok {
			v.Name = "disk"
		}
		v.Path = v.Name
		if pv, err := readLVMLabel(v.r, v.Size); err != nil {
			v.Err = &VolumeError{Volume: v.Path, Found: "LVM2 physical volume", Err: err}
		} else if pv != nil {
			pvs[pv.uuid] = v.r
			v.Desc += ", LVM2 physical volume"
			if pv.text != "" {
				v.Sub = []*Volume{{Name: pv.text}} // placeholder: parsed below
				metas = append(metas, v)
			}
		} else {
			v.probe(ctx)
		}
		p.Volumes = append(p.Volumes, v)
	}
	for _, v := range metas {
		v.logicalVolumes(ctx, v.Sub[0].Name, pvs)
	}
	return p, nil
}

// logicalVolumes fills v.Sub with the LVs its metadata text describes.
func (v *Volume) logicalVolumes(ctx context.Context, text string, pvs map[string]io.ReaderAt) {
	v.Sub = nil
	root, err := parseLVMText(text)
	var vg string
	var lvs []lvmLV
	if err == nil {
		vg, lvs, err = lvmLayout(root)
	}
	if err != nil {
		v.Err = &VolumeError{Volume: v.Path, Found: "LVM2 metadata", Err: err}
		return
	}
	v.Desc += ", volume group " + vg
	for _, lv := range lvs {
		sub := &Volume{Name: vg + "-" + lv.name, Size: lv.size, Desc: "LVM2 logical volume"}
		sub.Path = v.Path + "/" + sub.Name
		if err := lvmMissing(lv, pvs); err != nil {
			lv.err = err
		}
		if lv.err != nil {
			sub.Err = &VolumeError{Volume: sub.Path, Found: "LVM2 logical volume", Err: lv.err}
		} else {
			sub.r = &lvReader{segs: lv.segs, pvs: pvs, size: lv.size}
			sub.probe(ctx)
		}
		v.Sub = append(v.Sub, sub)
	}
}

func lvmMissing(lv lvmLV, pvs map[string]io.ReaderAt) error {
	for _, s := range lv.segs {
		if pvs[s.pv] == nil {
			return fmt.Errorf("lvm: logical volume %s: physical volume %s is not on this disk: %w", lv.name, s.pv, ErrUnsupported)
		}
	}
	return nil
}

// probe finds the filesystem on v by its signature.
func (v *Volume) probe(ctx context.Context) {
	found, open := sniff(v.r)
	if open == nil {
		v.Err = &VolumeError{Volume: v.Path, Found: found, Err: ErrUnsupported}
		v.Desc += ", " + found
		return
	}
	fs, err := open(v.r, v.Size)
	if err != nil {
		v.Err = &VolumeError{Volume: v.Path, Found: found, Err: err}
		v.Desc += ", " + found
		return
	}
	v.FS = fs
	v.Desc += ", " + fs.Type()
}

type opener func(io.ReaderAt, int64) (FS, error)

// sniff names the filesystem signature on r and returns its reader, nil
// for one this package does not read.
func sniff(r io.ReaderAt) (string, opener) {
	b := make([]byte, 64<<10+512)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	has := func(off int, s string) bool { return len(b) >= off+len(s) && string(b[off:off+len(s)]) == s }
	switch {
	case len(b) >= 1082 && b[1080] == 0x53 && b[1081] == 0xEF:
		return "ext2/3/4", func(r io.ReaderAt, n int64) (FS, error) { return openExt(r, n) }
	case has(82, "FAT32") || has(54, "FAT12") || has(54, "FAT16") || has(54, "FAT     "):
		return "FAT", func(r io.ReaderAt, n int64) (FS, error) { return openFAT(r, n) }
	case has(0, "XFSB"):
		return "xfs", func(r io.ReaderAt, n int64) (FS, error) { return openXFS(r, n) }
	case has(3, "NTFS    "):
		return "ntfs (not read)", nil
	case has(65536+64, "_BHRfS_M"):
		return "btrfs (not read)", nil
	case has(4086, "SWAPSPACE2"):
		return "linux swap", nil
	case has(3, "EXFAT   "):
		return "exfat (not read)", nil
	}
	if len(b) == 0 || allZero(b) {
		return "empty (zeros)", nil
	}
	return "unknown (no filesystem signature)", nil
}

// Ref is a place in the tree: a volume's inode, or (FS nil) one of the
// directories above the filesystems.
type Ref struct {
	Vol *Volume // nil: the point's root
	Ino uint64  // within Vol.FS
}

func (r Ref) synthetic() bool { return r.Vol == nil || r.Vol.FS == nil }

// Root is the point's root directory.
func (p *Point) Root() Ref { return Ref{} }

// Stat describes ref. The directories above the filesystems read as
// 0555 directories with the point's time.
func (p *Point) Stat(ctx context.Context, r Ref) (Node, error) {
	if r.synthetic() {
		return Node{Mode: ModeDir | 0o555, Nlink: 2, Mtime: p.Time, Atime: p.Time, Ctime: p.Time}, nil
	}
	return r.Vol.FS.Stat(ctx, r.Ino)
}

// Named is one entry of a directory listing.
type Named struct {
	Name   string
	Ref    Ref
	Volume *Volume // set for the volumes listed above the filesystems
}

// ReadDir lists ref's entries sorted by name; a name that could not be a
// file name on a host ("/", NUL) is refused with ErrEscape.
func (p *Point) ReadDir(ctx context.Context, r Ref) ([]Named, error) {
	if r.synthetic() {
		return p.volumeDir(r)
	}
	if out, ok := p.dirs.get(r); ok {
		return out, nil
	}
	out, err := p.readDir(ctx, r)
	if err == nil {
		p.dirs.put(r, out)
	}
	return out, err
}

func (p *Point) readDir(ctx context.Context, r Ref) ([]Named, error) {
	ents, err := r.Vol.FS.ReadDir(ctx, r.Ino)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Vol.Path, err)
	}
	out := make([]Named, 0, len(ents))
	for _, e := range ents {
		if strings.ContainsAny(e.Name, "/\x00") {
			return nil, fmt.Errorf("%s: directory entry %q: %w", r.Vol.Path, e.Name, ErrEscape)
		}
		out = append(out, Named{Name: e.Name, Ref: Ref{Vol: r.Vol, Ino: e.Ino}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name { // a lookup, a restore would pick one of them
			return nil, fmt.Errorf("%s: directory holds two entries named %q: %w", r.Vol.Path, out[i].Name, ErrDamaged)
		}
	}
	return out, nil
}

func (p *Point) volumeDir(r Ref) ([]Named, error) {
	vols := p.Volumes
	if r.Vol != nil {
		if r.Vol.Err != nil {
			return nil, r.Vol.Err
		}
		vols = r.Vol.Sub
	}
	var out []Named
	for _, v := range vols {
		ref := Ref{Vol: v}
		if v.FS != nil {
			ref.Ino = v.FS.Root()
		}
		out = append(out, Named{Name: v.Name, Ref: ref, Volume: v})
	}
	return out, nil
}

// Open opens a regular file.
func (p *Point) Open(ctx context.Context, r Ref) (File, error) {
	if r.synthetic() {
		return nil, fmt.Errorf("open: %w", ErrNotFound)
	}
	return r.Vol.FS.Open(ctx, r.Ino)
}

// Readlink reads a symlink's target.
func (p *Point) Readlink(ctx context.Context, r Ref) (string, error) {
	if r.synthetic() {
		return "", fmt.Errorf("readlink: %w", ErrNotFound)
	}
	return r.Vol.FS.Readlink(ctx, r.Ino)
}

// maxSymlinkHops bounds the symlinks followed resolving one path.
const maxSymlinkHops = 40

// Lookup resolves a path from the point's root ("/part1/etc/hosts").
// ".." is refused (ErrEscape); symlinks in the middle of the path are
// followed inside their filesystem (an absolute target starts at the
// filesystem's root, and ".." in a target stops there), the last
// component is not.
func (p *Point) Lookup(ctx context.Context, path string) (Ref, error) {
	names, err := SplitPath(path)
	if err != nil {
		return Ref{}, err
	}
	stack := []Ref{p.Root()}
	hops := 0
	for i := 0; i < len(names); i++ {
		cur := stack[len(stack)-1]
		if names[i] == ".." { // only from a symlink target: SplitPath refuses it
			if len(stack) > 1 && !stack[len(stack)-2].synthetic() {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		ref, err := p.child(ctx, cur, names[i])
		if err != nil {
			return Ref{}, fmt.Errorf("%s: %w", path, err)
		}
		if i == len(names)-1 || ref.synthetic() {
			stack = append(stack, ref)
			continue
		}
		n, err := p.Stat(ctx, ref)
		if err != nil {
			return Ref{}, err
		}
		if !n.IsSymlink() {
			stack = append(stack, ref)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return Ref{}, fmt.Errorf("%s: too many symlinks: %w", path, ErrNotFound)
		}
		tgt, err := p.Readlink(ctx, ref)
		if err != nil {
			return Ref{}, err
		}
		stack = p.followLink(stack, tgt)
		rest := append(strings.Split(tgt, "/"), names[i+1:]...)
		names = append(names[:i+1:i+1], cleanNames(rest)...)
	}
	return stack[len(stack)-1], nil
}

// followLink trims the stack to where a link's target starts: the
// filesystem's root for an absolute one, the link's directory otherwise.
// The target's own components are then walked by Lookup.
func (p *Point) followLink(stack []Ref, tgt string) []Ref {
	if strings.HasPrefix(tgt, "/") {
		for i, r := range stack {
			if !r.synthetic() {
				return stack[:i+1]
			}
		}
	}
	return stack
}

// cleanNames drops empty and "." names; ".." (in a symlink target) is
// kept as a marker that child resolves to the parent, clamped at the
// filesystem root.
func cleanNames(in []string) []string {
	var out []string
	for _, n := range in {
		if n != "" && n != "." {
			out = append(out, n)
		}
	}
	return out
}

func (p *Point) child(ctx context.Context, dir Ref, name string) (Ref, error) {
	if name == ".." {
		return Ref{}, fmt.Errorf("%q: %w", name, ErrEscape)
	}
	ents, err := p.ReadDir(ctx, dir)
	if errors.Is(err, ErrNotDir) {
		return Ref{}, fmt.Errorf("%s: %w", name, ErrNotDir)
	} else if err != nil {
		return Ref{}, err
	}
	i := sort.Search(len(ents), func(i int) bool { return ents[i].Name >= name })
	if i < len(ents) && ents[i].Name == name {
		return ents[i].Ref, nil
	}
	return Ref{}, fmt.Errorf("%s: %w", name, ErrNotFound)
}

// SplitPath splits a point path into names; ".." anywhere is refused
// with ErrEscape (a path must name something inside the point).
func SplitPath(path string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(path, "/") {
		switch n {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("path %q: %w", path, ErrEscape)
		}
		if strings.ContainsRune(n, 0) {
			return nil, fmt.Errorf("path %q: %w", path, ErrEscape)
		}
		out = append(out, n)
	}
	return out, nil
}

// dirCacheEntries bounds the directory entries a Point keeps parsed: a
// FUSE lookup of each name of a large directory would otherwise parse
// the whole directory again each time.
const dirCacheEntries = 1 << 20

// dirCache keeps recently listed directories, least recently used out.
type dirCache struct {
	max   int
	mu    sync.Mutex
	n     int
	m     map[Ref]*list.Element // of dirCached
	order list.List
}

type dirCached struct {
	ref  Ref
	ents []Named
}

func (c *dirCache) get(r Ref) ([]Named, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[r]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(dirCached).ents, true
}

func (c *dirCache) put(r Ref, ents []Named) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[Ref]*list.Element{}
	}
	if _, ok := c.m[r]; ok || len(ents) > c.max {
		return
	}
	c.m[r] = c.order.PushFront(dirCached{r, ents})
	c.n += len(ents) + 1
	for c.n > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		d := old.Value.(dirCached)
		delete(c.m, d.ref)
		c.n -= len(d.ents) + 1
	}
}
