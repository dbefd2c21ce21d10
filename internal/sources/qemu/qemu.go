package qemu

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/qmp"
	"github.com/blockwise/blockwise/internal/quiesce"
)

// Sentinel errors.
var (
	// ErrURI: a source URI this package cannot read.
	ErrURI = errors.New("bad qemu source URI")
	// ErrNoDrive: a drive named that the VM does not have, or one without
	// an image.
	ErrNoDrive = errors.New("no such drive")
	// ErrNBDServer: QEMU's NBD server is already running for someone
	// else (libvirt, another tool): blockwise does not take it over.
	ErrNBDServer = errors.New("QEMU's NBD server is in use by another client")
	// ErrNoVM: nothing answers on the QMP socket (no such VM, or it is
	// not running).
	ErrNoVM = errors.New("no QEMU VM at this QMP socket")
)

// Options of a source.
type Options struct {
	Socket string   // QMP unix socket
	Drives []string // node names (or device ids); empty: every drive
	// Name of the VM in disk names; default QEMU's -name, else the
	// socket's file name without extension.
	Name string
	// Tag names the owner of the bitmaps (the repository's ID prefix), so
	// two repositories backing up one VM do not rotate each other's.
	Tag string
	// Scratch holds the fleecing overlays and the NBD socket; os.TempDir
	// if empty. QEMU must be able to write there.
	Scratch string
	// Quiesce freezes the guest around the views; its Connect is set from
	// AgentSocket when nil.
	Quiesce     quiesce.Options
	AgentSocket string
	// Monitor, when set, is the VM's monitor instead of a dial of Socket
	// (libvirt's QMP passthrough); Control then pauses and resumes it.
	Monitor Monitor
	Control *Control
	// Workspace makes a restore's private directory where QEMU runs;
	// this host's Scratch if nil.
	Workspace Workspace
	// StateDir holds the state files of restores into the VM's drives
	// (Scratch if empty), and Key names the VM in them (the QMP socket's
	// absolute path if empty): Open recovers the restores killed there.
	StateDir, Key string
}

// Monitor runs QMP commands (*qmp.Client, or a passthrough).
type Monitor interface {
	Execute(ctx context.Context, cmd string, args, out any) error
	Close() error
}

// Control is how a restore into a drive pauses and resumes a VM whose
// monitor belongs to a manager (libvirt), and what it may not use.
type Control struct {
	Running func(ctx context.Context) (bool, error)
	Pause   func(ctx context.Context) error
	Resume  func(ctx context.Context) error
	// Whole: always write the whole point, for this reason (the drive's
	// bitmaps are the manager's); no marker bitmap is left either.
	Whole string
}

// ParseURI reads qemu+unix:///PATH/qmp.sock?drive=A,B&agent=PATH&name=VM.
func ParseURI(s string) (Options, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "qemu+unix" || u.Host != "" || u.Path == "" {
		return Options{}, fmt.Errorf("%w: %q: want qemu+unix:///PATH/TO/qmp.sock[?drive=A,B&agent=PATH&name=VM]", ErrURI, s)
	}
	q := u.Query()
	o := Options{Socket: u.Path, AgentSocket: q.Get("agent"), Name: q.Get("name")}
	for _, d := range strings.Split(q.Get("drive"), ",") {
		if d != "" {
			o.Drives = append(o.Drives, d)
		}
	}
	for k := range q {
		if k != "drive" && k != "agent" && k != "name" {
			return Options{}, fmt.Errorf("%w: %q: unknown parameter %q", ErrURI, s, k)
		}
	}
	return o, nil
}

// IsURI reports whether s names a QEMU source.
func IsURI(s string) bool { return strings.HasPrefix(s, "qemu+unix:") }

// Source is one VM's QMP connection, as a backup.Host.
type Source struct {
	o      Options
	c      Monitor
	name   string
	pid    int
	drives []*drive

	mu      sync.Mutex
	seq     int
	pending map[string]*view // by disk: taken with a round, not yet used
	views   map[string]*view // by snapshot ID
	nbdSock string
	nbdOurs bool
	// recovered: what Open did about killed restores into the VM.
	recovered []string
}

var _ backup.Host = (*Source)(nil)

// drive is one block node backed up.
type drive struct {
	node, disk string
	format     string
}

// Open connects to the VM, removes what killed backups left, and finds
// the drives.
func Open(ctx context.Context, o Options) (*Source, error) {
	if o.Scratch == "" {
		o.Scratch = os.TempDir()
	}
	if o.Tag == "" {
		o.Tag = "bw"
	}
	if o.Quiesce.Connect == nil && o.AgentSocket != "" {
		path := o.AgentSocket
		o.Quiesce.Connect = func(ctx context.Context) (quiesce.Freezer, error) { return quiesce.DialAgent(ctx, path) }
	}
	c := o.Monitor
	if c == nil {
		qc, err := qmp.Dial(ctx, o.Socket)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
				return nil, fmt.Errorf("%w: %w", ErrNoVM, err)
			}
			return nil, err
		}
		c = qc
	}
	s := &Source{o: o, c: c, pid: os.Getpid(), pending: map[string]*view{}, views: map[string]*view{}}
	if err := s.init(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func (s *Source) init(ctx context.Context) error {
	s.name = s.o.Name
	if s.name == "" {
		var n struct {
			Name string `json:"name"`
		}
		if err := s.c.Execute(ctx, "query-name", nil, &n); err != nil {
			return err
		}
		s.name = n.Name
	}
	if s.name == "" {
		s.name = strings.TrimSuffix(filepath.Base(s.o.Socket), filepath.Ext(s.o.Socket))
	}
	if err := s.recoverRestores(ctx); err != nil {
		return err
	}
	if err := s.removeStale(ctx); err != nil {
		return fmt.Errorf("remove what an earlier backup left in QEMU: %w", err)
	}
	return s.findDrives(ctx)
}

// findDrives picks the chosen drives (every one with an image by default).
func (s *Source) findDrives(ctx context.Context) error {
	blocks, err := s.queryBlock(ctx)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, d := range s.o.Drives {
		want[d] = true
	}
	// Chosen drives are ticked off want as they are found; the filter
	// holds for the whole list (not only until the last one is found).
	chosen := maps.Clone(want)
	for _, b := range blocks {
		if b.Inserted == nil {
			continue
		}
		node := b.Inserted.NodeName
		names := []string{node, b.Device, b.QDev, qdevID(b.QDev)}
		if len(chosen) > 0 && !anyIn(chosen, names) {
			continue
		}
		for _, n := range names {
			delete(want, n)
		}
		s.drives = append(s.drives, &drive{node: node, disk: s.name + "/" + node, format: b.Inserted.Image.Format})
	}
	if len(want) > 0 {
		var missing []string
		for d := range want {
			missing = append(missing, d)
		}
		sort.Strings(missing)
		return fmt.Errorf("%w: %s in VM %s", ErrNoDrive, strings.Join(missing, ", "), s.name)
	}
	if len(s.drives) == 0 {
		return fmt.Errorf("%w: VM %s has no drive with an image", ErrNoDrive, s.name)
	}
	return nil
}

// qdevID is the device id in a QOM path /machine/peripheral/ID/...
// (libvirt's disk alias, -device ...,id=ID), "" for others.
func qdevID(path string) string {
	rest, ok := strings.CutPrefix(path, "/machine/peripheral/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}

func anyIn(m map[string]bool, names []string) bool {
	for _, n := range names {
		if n != "" && m[n] {
			return true
		}
	}
	return false
}

// Disks are the repository disk names of the chosen drives.
func (s *Source) Disks() []string {
	var out []string
	for _, d := range s.drives {
		out = append(out, d.disk)
	}
	return out
}

// Name is the VM's name.
func (s *Source) Name() string { return s.name }

func (s *Source) drive(disk string) (*drive, error) {
	for _, d := range s.drives {
		if d.disk == disk || d.node == disk {
			return d, nil
		}
	}
	return nil, fmt.Errorf("%w: %s in VM %s", ErrNoDrive, disk, s.name)
}

// Disk implements backup.Host: the identity is the VM and node name (a
// swapped or reverted image is caught by the chain check, not here).
func (s *Source) Disk(ctx context.Context, disk string) (backup.DiskInfo, error) {
	d, err := s.drive(disk)
	if err != nil {
		return backup.DiskInfo{}, err
	}
	info, err := s.nodeInfo(ctx, d.node)
	if err != nil {
		return backup.DiskInfo{}, err
	}
	return backup.DiskInfo{UUID: "qemu:" + d.disk, Size: info.Image.VirtualSize}, nil
}

// Snapshots implements backup.Host: views are the source's own business
// (stale ones are removed by Open), so none are listed.
func (s *Source) Snapshots(ctx context.Context, disk string) ([]backup.Snapshot, error) {
	return nil, nil
}

// CreateSnapshot implements backup.Host: the first call takes a view of
// every chosen drive at once (one freeze, one transaction); the others
// hand out theirs.
func (s *Source) CreateSnapshot(ctx context.Context, disk, desc string) (backup.Snapshot, error) {
	d, err := s.drive(disk)
	if err != nil {
		return backup.Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[d.disk] == nil {
		if err := s.round(ctx, d); err != nil {
			return backup.Snapshot{}, err
		}
	}
	v := s.pending[d.disk]
	delete(s.pending, d.disk)
	return v.snapshot(), nil
}

// round takes views of every drive without a pending one (d included).
func (s *Source) round(ctx context.Context, d *drive) error {
	var ds []*drive
	for _, x := range s.drives {
		if s.pending[x.disk] == nil {
			ds = append(ds, x)
		}
	}
	vs, err := s.takeViews(ctx, ds)
	if err != nil {
		return err
	}
	for _, v := range vs {
		s.pending[v.d.disk] = v
		s.views[v.id] = v
	}
	return nil
}

// ChangedAreas implements backup.Host. The whole answer is one page.
func (s *Source) ChangedAreas(ctx context.Context, disk, snap string, start int64, since string) (*backup.Areas, error) {
	s.mu.Lock()
	v := s.views[snap]
	s.mu.Unlock()
	if v == nil {
		return nil, fmt.Errorf("%w: view %s of %s", ErrNoDrive, snap, disk)
	}
	if start > 0 {
		return &backup.Areas{StartOffset: start, Length: max(v.size-start, 1)}, nil
	}
	areas, err := s.areas(ctx, v, since)
	if err != nil {
		return nil, err
	}
	return &backup.Areas{StartOffset: 0, Length: v.size, Changed: areas}, nil
}

// OpenView opens a view's NBD export (backup.Options.Open).
func (s *Source) OpenView(ctx context.Context, disk, snap string) (backup.Source, error) {
	s.mu.Lock()
	v := s.views[snap]
	s.mu.Unlock()
	if v == nil || !v.exported {
		return nil, fmt.Errorf("%w: view %s of %s is not exported", ErrNoDrive, snap, disk)
	}
	return nbd.Dial(ctx, v.uri(s.nbdSock), nil)
}

// DeleteSnapshot implements backup.Host: the export, the fleecing job,
// the overlay and the temporary bitmap go; the owned bitmaps stay.
func (s *Source) DeleteSnapshot(ctx context.Context, disk, snap string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.views[snap]
	if v == nil {
		return nil
	}
	delete(s.views, snap)
	return s.teardown(ctx, v)
}

// Close tears down views no backup used and closes the connection.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for id, v := range s.views {
		errs = append(errs, s.teardown(ctx, v))
		delete(s.views, id)
	}
	errs = append(errs, s.stopNBD(ctx))
	errs = append(errs, s.c.Close())
	return errors.Join(errs...)
}
