package disk

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/metafile"
	"github.com/blockwise/blockwise/internal/vfs"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s is a valid disk or snapshot name.
func ValidName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%w: %q (want [A-Za-z0-9][A-Za-z0-9._-]{0,63})", ErrInvalidName, s)
	}
	return nil
}

const (
	dsMetaName = "datastore.meta"
	dsMagic    = "BWDSTOR1"
)

// Datastore is a directory of disks.
type Datastore struct {
	dir string
	id  string
	fs  vfs.FS // every file operation of the datastore and its disks
	// boot is the machine's boot ID ("" unknown): CBT recovery trusts the
	// unsynced block records of a journal only under the boot ID that
	// wrote them (docs/format.md invariant 1a).
	boot    string
	bootSet bool
	reserve int64 // journalReserve; tests set a smaller one
	// noTrees: the disks keep no snapshot hash trees (WithHashTrees).
	noTrees bool
}

// DatastoreOption configures OpenDatastore (and the direct readers).
type DatastoreOption func(*Datastore)

// WithFS puts the datastore and the disks opened from it on fsys instead
// of the operating system's file system (vfs.Default): the seam a test
// uses to simulate a power loss or a failing device.
func WithFS(fsys vfs.FS) DatastoreOption {
	return func(ds *Datastore) { ds.fs = fsys }
}

// WithBootID sets the boot ID the datastore's disks run under instead of
// the kernel's (/proc/sys/kernel/random/boot_id): a test simulating a power
// loss gives the "rebooted" machine another one. "" means unknown, so CBT
// recovers from its coarse regions only.
func WithBootID(id string) DatastoreOption {
	return func(ds *Datastore) { ds.boot, ds.bootSet = id, true }
}

// WithHashTrees turns the snapshot hash trees (docs/format.md, "Hash
// tree") on (the default) or off; off, SnapshotTree answers ErrNoTree.
// bench/engine.sh compares the two.
func WithHashTrees(on bool) DatastoreOption {
	return func(ds *Datastore) { ds.noTrees = !on }
}

// options is a datastore as opts configure it.
func options(opts []DatastoreOption) *Datastore {
	ds := &Datastore{fs: vfs.Default, reserve: journalReserve}
	for _, o := range opts {
		o(ds)
	}
	if !ds.bootSet {
		ds.boot = machineBootID()
	}
	return ds
}

// fsOf is the file system opts choose.
func fsOf(opts []DatastoreOption) vfs.FS {
	ds := &Datastore{fs: vfs.Default}
	for _, o := range opts {
		o(ds)
	}
	return ds.fs
}

// machineBootID is the kernel's boot ID, random at every boot; "" where
// there is none (not Linux), which makes CBT recovery coarse, never wrong.
func machineBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

type dsMeta struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// OpenDatastore opens dir, creating it and its identity on first use.
func OpenDatastore(dir string, opts ...DatastoreOption) (*Datastore, error) {
	ds := options(opts)
	fsys := ds.fs
	// Synced into its parent: else a power loss could take the datastore
	// (and its identity) away though its files were synced.
	if err := vfs.MkdirAllSync(fsys, dir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, dsMetaName)
	data, err := vfs.ReadFile(fsys, p)
	if errors.Is(err, os.ErrNotExist) {
		m := dsMeta{ID: cbt.NewUUID(), Created: time.Now().UTC()}
		body, _ := json.Marshal(m)
		if err := vfs.WriteAtomic(fsys, p, metafile.Encode(dsMagic, 1, body)); err != nil {
			return nil, err
		}
		ds.dir, ds.id = dir, m.ID
		return ds, nil
	}
	if err != nil {
		return nil, err
	}
	_, body, err := metafile.Decode(p, dsMagic, 1, data)
	if err != nil {
		return nil, err
	}
	var m dsMeta
	if err := json.Unmarshal(body, &m); err != nil || m.ID == "" {
		return nil, fmt.Errorf("%s: %w: bad body", p, ErrCorrupt)
	}
	ds.dir, ds.id = dir, m.ID
	ds.removeCloneLeftovers()
	return ds, nil
}

// Dir is the datastore's directory.
func (ds *Datastore) Dir() string { return ds.dir }

// ID is the datastore's identity (a proxy reading it directly checks it).
func (ds *Datastore) ID() string { return ds.id }

func (ds *Datastore) diskDir(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	return filepath.Join(ds.dir, name), nil
}

// List names the disks in the datastore, sorted.
func (ds *Datastore) List() ([]string, error) {
	ents, err := ds.fs.ReadDir(ds.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		if _, err := ds.fs.Stat(filepath.Join(ds.dir, e.Name(), metaName)); err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Delete removes a disk that no process has open.
func (ds *Datastore) Delete(name string) error {
	dir, err := ds.diskDir(name)
	if err != nil {
		return err
	}
	if _, err := ds.fs.Stat(filepath.Join(dir, metaName)); err != nil {
		return fmt.Errorf("disk %s: %w", name, ErrNotFound)
	}
	lock, err := ds.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return fmt.Errorf("disk %s: %w: %v", name, ErrBusy, err)
	}
	defer lock.Close()
	// Remove disk.meta first: from then on the directory is no disk.
	if err := ds.fs.Remove(filepath.Join(dir, metaName)); err != nil {
		return err
	}
	if err := vfs.SyncDir(ds.fs, dir); err != nil {
		return err
	}
	return ds.fs.RemoveAll(dir)
}
