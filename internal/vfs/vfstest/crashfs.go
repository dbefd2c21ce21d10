// Package vfstest holds file systems for tests of code written against
// vfs.FS. CrashFS simulates a power loss: what was not made durable (a
// write not followed by a sync of its file, a creation, rename or removal
// not followed by a sync of its directory) is lost by Crash, and survives
// or not, torn at 4 KiB pages, by Cut (docs/format.md, "Power cuts",
// C1-C4).
package vfstest

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/vfs"
)

// ErrCrashed is what every call into a CrashFS (and its open files)
// returns after its Crash: the process that used it died with the machine.
var ErrCrashed = errors.New("vfstest: file system crashed")

// CrashFS is an in-memory file system that keeps two views: the one
// processes see (what the page cache holds) and the durable one (what the
// device holds). Names are absolute slash paths; "/" exists and is
// durable. All calls are serialised: it is for correctness tests.
type CrashFS struct {
	mu      sync.Mutex
	dead    bool
	cur     map[string]*node // path -> node as processes see it
	durable map[string]*node // path -> node after a power loss
	locks   map[string]bool
	boot    string // the simulated machine's boot ID, new after each Crash
	// moved maps the destination of each rename not yet made durable to
	// its source, so that a Cut keeps or undoes both sides together.
	moved map[string]string
	// countdown, when armed, is how many more mutating calls run before
	// the power fails by itself (CutAfter); after is the file system the
	// machine comes back with.
	armed     bool
	countdown int
	cutSeed   int64
	after     *CrashFS
}

// node is a file or directory; its data as read and as last synced.
type node struct {
	dir          bool
	data, synced []byte
	mod          time.Time
}

var (
	_ vfs.FS   = (*CrashFS)(nil)
	_ vfs.File = (*file)(nil)
)

// NewCrashFS returns an empty file system holding only "/".
func NewCrashFS() *CrashFS {
	root := &node{dir: true}
	return &CrashFS{
		cur:     map[string]*node{"/": root},
		durable: map[string]*node{"/": root},
		locks:   map[string]bool{},
		boot:    newBootID(),
		moved:   map[string]string{},
	}
}

// BootID is the boot ID of the machine this file system belongs to (what
// /proc/sys/kernel/random/boot_id would read): a Crash reboots it, so the
// CrashFS it returns has another one.
func (c *CrashFS) BootID() string { return c.boot }

func newBootID() string {
	var b [16]byte
	crand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Crash simulates a power loss: this CrashFS and its open files fail from
// now on with ErrCrashed, and the returned one holds what was durable:
// each file's data as of its last sync, each directory's entries as of
// its last sync (an unsynced rename is undone, an unsynced creation
// vanishes, an unsynced removal comes back). It is the worst case of Cut.
func (c *CrashFS) Crash() *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut(nil)
}

// Cut simulates a power loss that lets a random part of what was not
// synced reach the device, as a real one does (docs/format.md, "Power
// cuts", C1-C4): each file's unsynced data survives or reverts
// 4 KiB page by page (PageSize), its size is the synced or the current
// one, and each unsynced directory change (a creation, removal or
// rename; a rename's two names together) survives or is undone. What was
// synced always survives. The same state and seed give the same result.
func (c *CrashFS) Cut(seed int64) *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut(rand.New(rand.NewSource(seed)))
}

// CutAfter arms the file system to Cut(seed) by itself just before its
// ops-th next mutating call (a write, truncation, sync, creation, rename,
// link or removal; 0 cuts before the next one): that call and every later
// one fail with ErrCrashed, and Crashed returns what the machine comes
// back with. It lands cuts inside operations at reproducible points.
func (c *CrashFS) CutAfter(ops int, seed int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.countdown, c.cutSeed = true, ops, seed
}

// Crashed is the file system after the cut CutAfter armed, nil until it
// happened.
func (c *CrashFS) Crashed() *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.after
}

// PageSize is the unit in which a Cut tears unsynced file data: the page
// cache writes pages back independently, in no order.
const PageSize = 4096

// cut builds the file system after a power loss; rng nil keeps nothing
// unsynced. mu held.
func (c *CrashFS) cut(rng *rand.Rand) *CrashFS {
	c.dead = true
	after := &CrashFS{cur: map[string]*node{}, durable: map[string]*node{}, locks: map[string]bool{},
		boot: newBootID(), moved: map[string]string{}}
	copies := map[*node]*node{}
	coins := map[string]bool{}
	durable := c.durable
	if rng != nil {
		durable = c.movedDirs(coins, rng)
	}
	for _, p := range c.allPaths(durable) { // sorted: parents before children
		if p != "/" && after.cur[path.Dir(p)] == nil {
			continue // its directory's entry for it did not survive
		}
		n := durable[p]
		if cur := c.cur[p]; cur != n && rng != nil && c.coin(coins, p, rng) {
			n = cur
		}
		if n == nil {
			continue
		}
		m := copies[n]
		if m == nil {
			data := tear(n, rng)
			m = &node{dir: n.dir, data: data, synced: slices.Clone(data), mod: n.mod}
			copies[n] = m
		}
		after.cur[p], after.durable[p] = m, m
	}
	c.after = after
	return after
}

// movedDirs is the durable view in which each unsynced directory rename
// the coin keeps has taken the directory's durable entries along; mu
// held.
func (c *CrashFS) movedDirs(coins map[string]bool, rng *rand.Rand) map[string]*node {
	durable, cloned := c.durable, false
	for _, dst := range slices.Sorted(maps.Keys(c.moved)) {
		src, n := c.moved[dst], c.cur[dst]
		if n == nil || !n.dir || c.durable[src] != n || !c.coin(coins, dst, rng) {
			continue
		}
		if !cloned {
			durable, cloned = maps.Clone(c.durable), true
		}
		rekey(durable, src, dst)
	}
	return durable
}

// allPaths is every path either view holds, parents first; mu held.
func (c *CrashFS) allPaths(durable map[string]*node) []string {
	all := maps.Clone(durable)
	maps.Copy(all, c.cur)
	return sortedKeys(all)
}

// coin decides whether the unsynced change at p survives, once for both
// names of a rename; mu held.
func (c *CrashFS) coin(coins map[string]bool, p string, rng *rand.Rand) bool {
	key := c.moveKey(p)
	v, ok := coins[key]
	if !ok {
		v = rng.Intn(2) == 0
		coins[key] = v
	}
	return v
}

// moveKey names the rename p's fate is tied to: p's own, or that of a
// directory above it renamed (from or to) and not yet synced; else p.
func (c *CrashFS) moveKey(p string) string {
	for a := p; ; a = path.Dir(a) {
		if src, ok := c.moved[a]; ok {
			return src
		}
		for _, src := range c.moved {
			if src == a {
				return a
			}
		}
		if a == "/" {
			return p
		}
	}
}

// tear is what the device holds of n's data after a cut: with rng, each
// page the synced data or the current one, the size either.
func tear(n *node, rng *rand.Rand) []byte {
	if rng == nil || n.dir {
		return slices.Clone(n.synced)
	}
	old, cur := n.synced, n.data
	size := len(old)
	if rng.Intn(2) == 0 {
		size = len(cur)
	}
	out := make([]byte, size)
	for pg := 0; pg < size; pg += PageSize {
		src := old
		if rng.Intn(2) == 0 {
			src = cur
		}
		if pg < len(src) {
			copy(out[pg:min(pg+PageSize, size)], src[pg:min(pg+PageSize, len(src))])
		}
	}
	return out
}

func sortedKeys(m map[string]*node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return strings.Count(keys[i], "/") < strings.Count(keys[j], "/") ||
			strings.Count(keys[i], "/") == strings.Count(keys[j], "/") && keys[i] < keys[j]
	})
	return keys
}

func clean(name string) string { return path.Clean("/" + name) }

func perr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// lock takes the mutex and fails once crashed; callers unlock.
func (c *CrashFS) lock() error {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return ErrCrashed
	}
	return nil
}

// lockW is lock for a call that changes the file system: an armed
// CutAfter counts it and, at zero, cuts the power instead. Callers unlock.
func (c *CrashFS) lockW() error {
	if err := c.lock(); err != nil {
		return err
	}
	if !c.armed {
		return nil
	}
	if c.countdown > 0 {
		c.countdown--
		return nil
	}
	c.armed = false
	c.cut(rand.New(rand.NewSource(c.cutSeed)))
	c.mu.Unlock()
	return ErrCrashed
}

// parentDir checks that p's parent exists and is a directory; mu held.
func (c *CrashFS) parentDir(op, p string) error {
	if d := c.cur[path.Dir(p)]; d == nil || !d.dir {
		return perr(op, p, fs.ErrNotExist)
	}
	return nil
}

// OpenFile opens name with os.OpenFile's flags; writes are not durable
// until Sync, the entry of a new file not until its directory's Sync.
func (c *CrashFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	lock := c.lock
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		lock = c.lockW
	}
	if err := lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p := clean(name)
	n := c.cur[p]
	switch {
	case n != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, perr("open", name, fs.ErrExist)
	case n != nil && n.dir:
		return nil, perr("open", name, syscall.EISDIR)
	case n == nil && flag&os.O_CREATE == 0:
		return nil, perr("open", name, fs.ErrNotExist)
	case n == nil:
		if err := c.parentDir("open", p); err != nil {
			return nil, err
		}
		n = &node{mod: time.Now()}
		c.cur[p] = n
	}
	if flag&os.O_TRUNC != 0 {
		n.data = nil
	}
	return &file{fs: c, n: n, name: name, path: p, write: flag&(os.O_WRONLY|os.O_RDWR) != 0}, nil
}

// OpenDir opens a directory; its Sync makes its entries durable.
func (c *CrashFS) OpenDir(name string) (vfs.File, error) {
	if err := c.lockW(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p := clean(name)
	n := c.cur[p]
	if n == nil {
		return nil, perr("open", name, fs.ErrNotExist)
	}
	if !n.dir {
		return nil, perr("open", name, syscall.ENOTDIR)
	}
	return &file{fs: c, n: n, name: name, path: p}, nil
}

// Rename moves a file; the move is durable once the directory is synced.
func (c *CrashFS) Rename(oldname, newname string) error {
	if err := c.lockW(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	o, n := clean(oldname), clean(newname)
	src := c.cur[o]
	switch {
	case src == nil:
		return perr("rename", oldname, fs.ErrNotExist)
	case path.Dir(o) != path.Dir(n):
		return perr("rename", newname, errors.ErrUnsupported) // one directory sync covers it
	}
	if dst := c.cur[n]; dst != nil && (dst.dir || src.dir) {
		return perr("rename", newname, syscall.EISDIR) // no directory replaced
	}
	c.cur[n] = src
	delete(c.cur, o)
	if src.dir { // its entries go with it
		rekey(c.cur, o, n)
	}
	from := o
	if orig, ok := c.moved[o]; ok {
		from = orig
		delete(c.moved, o)
	}
	c.moved[n] = from
	return nil
}

// Remove removes a file or an empty directory.
func (c *CrashFS) Remove(name string) error {
	if err := c.lockW(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	p := clean(name)
	n := c.cur[p]
	if n == nil {
		return perr("remove", name, fs.ErrNotExist)
	}
	if n.dir && len(c.children(p)) > 0 {
		return perr("remove", name, syscall.ENOTEMPTY)
	}
	delete(c.cur, p)
	return nil
}

// RemoveAll removes name and everything below it.
func (c *CrashFS) RemoveAll(name string) error {
	if err := c.lockW(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	p := clean(name)
	for k := range c.cur {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(c.cur, k)
		}
	}
	return nil
}

// Mkdir makes a directory, durable once its parent is synced.
func (c *CrashFS) Mkdir(name string, perm fs.FileMode) error {
	if err := c.lockW(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.mkdir(clean(name))
}

func (c *CrashFS) mkdir(p string) error {
	if c.cur[p] != nil {
		return perr("mkdir", p, fs.ErrExist)
	}
	if err := c.parentDir("mkdir", p); err != nil {
		return err
	}
	c.cur[p] = &node{dir: true, mod: time.Now()}
	return nil
}

// MkdirAll makes a directory and its missing parents.
func (c *CrashFS) MkdirAll(name string, perm fs.FileMode) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	p := clean(name)
	if n := c.cur[p]; n != nil {
		if !n.dir {
			return perr("mkdir", name, syscall.ENOTDIR)
		}
		return nil
	}
	var missing []string
	for q := p; c.cur[q] == nil; q = path.Dir(q) {
		missing = append(missing, q)
	}
	for _, q := range slices.Backward(missing) {
		if err := c.mkdir(q); err != nil {
			return err
		}
	}
	return nil
}

// children names the entries of directory p; mu held.
func (c *CrashFS) children(p string) []string {
	var out []string
	for k := range c.cur {
		if k != "/" && path.Dir(k) == p {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// ReadDir lists a directory sorted by name.
func (c *CrashFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p := clean(name)
	if n := c.cur[p]; n == nil || !n.dir {
		return nil, perr("readdir", name, fs.ErrNotExist)
	}
	var out []fs.DirEntry
	for _, k := range c.children(p) {
		out = append(out, fs.FileInfoToDirEntry(c.info(k, c.cur[k])))
	}
	return out, nil
}

// Stat describes a file.
func (c *CrashFS) Stat(name string) (fs.FileInfo, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p := clean(name)
	n := c.cur[p]
	if n == nil {
		return nil, perr("stat", name, fs.ErrNotExist)
	}
	return c.info(p, n), nil
}

// Lock creates name if missing and locks it within this CrashFS (a crash
// releases every lock, as the death of the process does).
func (c *CrashFS) Lock(name string) (io.Closer, error) {
	f, err := c.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	p := clean(name)
	if c.locks[p] {
		return nil, fsutil.ErrLocked
	}
	c.locks[p] = true
	return closerFunc(func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.locks, p)
		return nil
	}), nil
}

var _ vfs.Linker = (*CrashFS)(nil)

// Link makes newname another name of oldname's file (which must be a
// file, newname must not exist); the new entry is durable once newname's
// directory is synced.
func (c *CrashFS) Link(oldname, newname string) error {
	if err := c.lockW(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	o, n := clean(oldname), clean(newname)
	src := c.cur[o]
	switch {
	case src == nil:
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: fs.ErrNotExist}
	case src.dir:
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EPERM}
	case c.cur[n] != nil:
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: fs.ErrExist}
	}
	if err := c.parentDir("link", n); err != nil {
		return err
	}
	c.cur[n] = src
	return nil
}

type closerFunc func() error

// Close implements io.Closer.
func (f closerFunc) Close() error { return f() }

// rekey moves every entry of m below directory o to below n.
func rekey(m map[string]*node, o, n string) {
	for k, v := range m {
		if strings.HasPrefix(k, o+"/") {
			delete(m, k)
			m[n+k[len(o):]] = v
		}
	}
}

// syncDir makes the entries of directory p durable as they are now; a
// directory renamed into p takes its durable entries along.
func (c *CrashFS) syncDir(p string) {
	for dst, src := range c.moved {
		if path.Dir(dst) == p && c.cur[dst] != nil && c.cur[dst].dir && c.durable[src] == c.cur[dst] {
			rekey(c.durable, src, dst)
		}
	}
	for k := range c.durable {
		if k != "/" && path.Dir(k) == p && c.cur[k] == nil {
			delete(c.durable, k)
		}
	}
	for _, k := range c.children(p) {
		c.durable[k] = c.cur[k]
	}
	for dst := range c.moved {
		if path.Dir(dst) == p {
			delete(c.moved, dst)
		}
	}
}

// fileInfo describes a node.
type fileInfo struct {
	name string
	size int64
	dir  bool
	mod  time.Time
	// links is how many names the file has: Sys reports it as a
	// syscall.Stat_t's Nlink, as the engine reads it (vfs.Links).
	links uint64
}

var _ fs.FileInfo = fileInfo{}

// info describes node n at p; mu held.
func (c *CrashFS) info(p string, n *node) fileInfo {
	links := uint64(0)
	for _, m := range c.cur {
		if m == n {
			links++
		}
	}
	return fileInfo{name: path.Base(p), size: int64(len(n.data)), dir: n.dir, mod: n.mod, links: max(links, 1)}
}

// Name implements fs.FileInfo.
func (i fileInfo) Name() string { return i.name }

// Size implements fs.FileInfo.
func (i fileInfo) Size() int64 { return i.size }

// ModTime implements fs.FileInfo.
func (i fileInfo) ModTime() time.Time { return i.mod }

// IsDir implements fs.FileInfo.
func (i fileInfo) IsDir() bool { return i.dir }

// Sys implements fs.FileInfo.
func (i fileInfo) Sys() any { return &syscall.Stat_t{Nlink: i.links} }

// Mode implements fs.FileInfo.
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o700
	}
	return 0o600
}

// file is an open file or directory of a CrashFS.
type file struct {
	fs     *CrashFS
	n      *node
	name   string
	path   string
	write  bool
	off    int64
	closed bool
}

// op takes the file system's mutex for one call on f; callers unlock.
func (f *file) op(name string) error {
	lock := f.fs.lock
	if name == "write" || name == "sync" || name == "truncate" {
		lock = f.fs.lockW
	}
	if err := lock(); err != nil {
		return err
	}
	if f.closed {
		f.fs.mu.Unlock()
		return perr(name, f.name, fs.ErrClosed)
	}
	return nil
}

func (f *file) readAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) writeAt(p []byte, off int64) (int, error) {
	if !f.write || f.n.dir {
		return 0, perr("write", f.name, syscall.EBADF)
	}
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	f.n.mod = time.Now()
	return copy(f.n.data[off:], p), nil
}

// ReadAt reads at off; short at the end with io.EOF.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if err := f.op("read"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	return f.readAt(p, off)
}

// Read reads at the file offset.
func (f *file) Read(p []byte) (int, error) {
	if err := f.op("read"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	n, err := f.readAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// WriteAt writes at off, not durably.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if err := f.op("write"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	return f.writeAt(p, off)
}

// Write writes at the file offset, not durably.
func (f *file) Write(p []byte) (int, error) {
	if err := f.op("write"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	n, err := f.writeAt(p, f.off)
	f.off += int64(n)
	return n, err
}

// Sync makes a file's data and size, or a directory's entries, durable.
func (f *file) Sync() error {
	if err := f.op("sync"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if f.n.dir {
		f.fs.syncDir(f.path)
		return nil
	}
	f.n.synced = slices.Clone(f.n.data)
	return nil
}

// Truncate sets the size, not durably.
func (f *file) Truncate(size int64) error {
	if err := f.op("truncate"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if !f.write || size < 0 {
		return perr("truncate", f.name, syscall.EINVAL)
	}
	if size <= int64(len(f.n.data)) {
		f.n.data = f.n.data[:size:size]
	} else {
		f.n.data = append(f.n.data, make([]byte, size-int64(len(f.n.data)))...)
	}
	return nil
}

// Stat describes the file.
func (f *file) Stat() (fs.FileInfo, error) {
	if err := f.op("stat"); err != nil {
		return nil, err
	}
	defer f.fs.mu.Unlock()
	return f.fs.info(f.path, f.n), nil
}

// Name is the name the file was opened with.
func (f *file) Name() string { return f.name }

// Close closes the file; it does not sync.
func (f *file) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return perr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

// String names the file system in test output.
func (c *CrashFS) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("CrashFS(%d entries, %d durable)", len(c.cur), len(c.durable))
}
