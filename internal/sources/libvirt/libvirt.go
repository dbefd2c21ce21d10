package libvirt

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

// Sentinel errors.
var (
	// ErrURI: a source URI this package cannot read.
	ErrURI = errors.New("bad libvirt source URI")
	// ErrNoDisk: a disk the domain does not have (or no domain).
	ErrNoDisk = errors.New("no such domain disk")
)

// DefaultSocket is libvirtd's system socket.
const DefaultSocket = "/run/libvirt/libvirt-sock"

// Options of a source.
type Options struct {
	Socket string   // libvirtd's unix socket
	Domain string   // domain name
	Disks  []string // target devs (vda...); empty: every file disk
	// Tag names the owner of the checkpoints (the repository's ID prefix).
	Tag string
	// Scratch holds the scratch files of the backup job and its NBD
	// socket; QEMU (user libvirt-qemu, usually) must be able to write it.
	Scratch string
	Quiesce quiesce.Options
	// SSH, when set, reaches Socket on a remote host through ssh
	// (qemu+ssh:// URIs) instead of locally.
	SSH *sshDialer
}

// IsURI reports whether s names a libvirt source.
func IsURI(s string) bool {
	return strings.HasPrefix(s, "libvirt:") || strings.HasPrefix(s, "qemu+ssh:")
}

// ParseURI reads libvirt:///system?domain=NAME[&disk=vda,vdb][&socket=PATH]
// (drive= is accepted for disk=, as qemu+unix:// names it)
// and qemu+ssh://[USER@]HOST[:PORT]/system?domain=NAME[&disk=...]
// [&socket=REMOTE-PATH][&keyfile=PATH][&known_hosts=PATH] (libvirt's
// own parameter names).
func ParseURI(s string) (Options, error) {
	const want = "want libvirt:///system?domain=NAME[&disk=vda,vdb][&socket=PATH] or qemu+ssh://[USER@]HOST[:PORT]/system?domain=NAME[&keyfile=PATH][&known_hosts=PATH]"
	u, err := url.Parse(s)
	if err != nil || u.Path != "/system" || (u.Scheme == "libvirt") == (u.Host != "") || (u.Scheme != "libvirt" && u.Scheme != "qemu+ssh") {
		return Options{}, fmt.Errorf("%w: %q: %s", ErrURI, s, want)
	}
	q := u.Query()
	o := Options{Socket: q.Get("socket"), Domain: q.Get("domain")}
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.Domain == "" {
		return Options{}, fmt.Errorf("%w: %q: no domain=", ErrURI, s)
	}
	if q.Has("drive") { // the qemu+unix:// name, accepted too
		q.Set("disk", strings.Trim(q.Get("disk")+","+q.Get("drive"), ","))
		q.Del("drive")
	}
	for _, d := range strings.Split(q.Get("disk"), ",") {
		if d != "" {
			o.Disks = append(o.Disks, d)
		}
	}
	known := map[string]bool{"domain": true, "disk": true, "socket": true}
	if u.Scheme == "qemu+ssh" {
		if o.SSH, err = sshOf(u, o.Socket); err != nil {
			return Options{}, fmt.Errorf("%w: %q: %v", ErrURI, s, err)
		}
		known["keyfile"], known["known_hosts"] = true, true
	}
	for k := range q {
		if !known[k] {
			return Options{}, fmt.Errorf("%w: %q: unknown parameter %q", ErrURI, s, k)
		}
	}
	return o, nil
}

// sshOf is the ssh transport of a qemu+ssh URL.
func sshOf(u *url.URL, sock string) (*sshDialer, error) {
	d := &sshDialer{Host: u.Hostname(), Socket: sock, KeyFile: u.Query().Get("keyfile"), User: u.User.Username()}
	if strings.HasPrefix(d.Host, "-") || strings.HasPrefix(d.User, "-") {
		return nil, errors.New("host or user starts with '-'")
	}
	if strings.ContainsAny(sock, "'\x00\n") {
		return nil, fmt.Errorf("socket %q: quotes or control characters", sock)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("port %q", p)
		}
		d.Port = n
	}
	if kh := u.Query().Get("known_hosts"); kh != "" {
		d.Options = append(d.Options, "UserKnownHostsFile="+kh)
	}
	return d, nil
}

// Source is one libvirt domain, as a backup.Host.
type Source struct {
	o     Options
	l     *golibvirt.Libvirt
	dom   golibvirt.Domain
	disks []disk

	mu  sync.Mutex
	job *job
	seq int
	// recovered: what opening did about killed restores into the domain.
	recovered []string
}

var _ backup.Host = (*Source)(nil)

type disk struct{ target, name, file, alias string }

// job is one libvirt pull-mode backup of every chosen disk.
type job struct {
	id      string
	sock    string
	dir     string
	base    string // checkpoint the job is incremental from, "" for none
	why     string // why it is not incremental from the newest owned checkpoint
	newCP   string
	created time.Time
	q       quiesce.Result
	sizes   map[string]int64
	taken   map[string]bool // disks that had their snapshot
	open    map[string]bool // disks whose snapshot is not yet deleted
	// offline: the domain is shut off and each disk has its own qemu-nbd
	// (offline.go); nil for a libvirt backup job.
	offline map[string]*offlineDisk
	// tunnel forwards sock (on a remote libvirt host) to a local socket.
	tunnel *tunnel
}

// uri is the NBD URI of a disk's export.
func (j *job) uri(target string) string {
	if od := j.offline[target]; od != nil {
		return "nbd+unix:///" + target + "?socket=" + od.sock
	}
	if j.tunnel != nil {
		return "nbd+unix:///" + target + "?socket=" + j.tunnel.sock
	}
	return "nbd+unix:///" + target + "?socket=" + j.sock
}

// bitmap is the meta context of a disk's changes since the base.
func (j *job) bitmap(target string) string {
	if od := j.offline[target]; od != nil {
		return "qemu:dirty-bitmap:" + od.bitmap
	}
	return "qemu:dirty-bitmap:backup-" + target
}

// changeID is what a disk's point continues from: the job's new
// checkpoint; offline, the base when the disk's bitmap was usable.
func (j *job) changeID(target string) string {
	cp := j.newCP
	if od := j.offline[target]; od != nil && od.bitmap == "" {
		cp = noCheckpoint
	}
	return fmt.Sprintf("%s:%d", cp, j.sizes[target])
}

// Open connects to libvirtd and finds the domain's disks.
func Open(ctx context.Context, o Options) (*Source, error) {
	if o.Tag == "" {
		o.Tag = "bw"
	}
	if o.Scratch == "" {
		o.Scratch = os.TempDir()
	}
	var dialer socket.Dialer = dialers.NewLocal(dialers.WithSocket(o.Socket), dialers.WithLocalTimeout(10*time.Second))
	where := o.Socket
	if o.SSH != nil {
		dialer, where = *o.SSH, "ssh "+o.SSH.Host+":"+o.Socket
	}
	l := golibvirt.NewWithDialer(dialer)
	if err := l.ConnectToURI(golibvirt.QEMUSystem); err != nil {
		return nil, fmt.Errorf("libvirt %s: %w", where, err)
	}
	s := &Source{o: o, l: l}
	if err := s.init(); err != nil {
		l.Disconnect()
		return nil, err
	}
	if _, err := s.running(ctx); err == nil { // running or paused: QEMU is there
		if err := s.recoverRestores(ctx); err != nil {
			l.Disconnect()
			return nil, err
		}
	}
	if s.o.Quiesce.Connect == nil {
		s.o.Quiesce.Connect = func(context.Context) (quiesce.Freezer, error) { return freezer{s}, nil }
	}
	return s, nil
}

type domainXML struct {
	Disks []struct {
		Type   string `xml:"type,attr"`
		Device string `xml:"device,attr"`
		Source struct {
			File string `xml:"file,attr"`
		} `xml:"source"`
		Target struct {
			Dev string `xml:"dev,attr"`
		} `xml:"target"`
		Alias struct {
			Name string `xml:"name,attr"`
		} `xml:"alias"` // the guest device's id while running
	} `xml:"devices>disk"`
}

func (s *Source) init() error {
	dom, err := s.l.DomainLookupByName(s.o.Domain)
	if err != nil {
		return fmt.Errorf("%w: domain %s: %v", ErrNoDisk, s.o.Domain, err)
	}
	s.dom = dom
	x, err := s.l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return err
	}
	var d domainXML
	if err := xml.Unmarshal([]byte(x), &d); err != nil {
		return fmt.Errorf("domain XML: %w", err)
	}
	want := map[string]bool{}
	for _, t := range s.o.Disks {
		want[t] = true
	}
	chosen := maps.Clone(want) // want is ticked off; the filter holds for every disk
	for _, dd := range d.Disks {
		if dd.Device != "disk" || dd.Type != "file" || (len(chosen) > 0 && !chosen[dd.Target.Dev]) {
			continue
		}
		delete(want, dd.Target.Dev)
		s.disks = append(s.disks, disk{target: dd.Target.Dev, name: s.o.Domain + "/" + dd.Target.Dev, file: dd.Source.File, alias: dd.Alias.Name})
	}
	if len(want) > 0 || len(s.disks) == 0 {
		return fmt.Errorf("%w: %v in domain %s (file disks: %d)", ErrNoDisk, s.o.Disks, s.o.Domain, len(s.disks))
	}
	return nil
}

// Disks are the repository disk names (DOMAIN/TARGET).
func (s *Source) Disks() []string {
	var out []string
	for _, d := range s.disks {
		out = append(out, d.name)
	}
	return out
}

func (s *Source) disk(name string) (disk, error) {
	for _, d := range s.disks {
		if d.name == name || d.target == name {
			return d, nil
		}
	}
	return disk{}, fmt.Errorf("%w: %s", ErrNoDisk, name)
}

// Disk implements backup.Host.
func (s *Source) Disk(ctx context.Context, name string) (backup.DiskInfo, error) {
	d, err := s.disk(name)
	if err != nil {
		return backup.DiskInfo{}, err
	}
	if on, err := s.active(); err != nil || !on {
		info, ierr := readImageInfo(ctx, d.file)
		return backup.DiskInfo{UUID: "libvirt:" + d.name, Size: info.VirtualSize}, errors.Join(err, ierr)
	}
	_, capacity, _, err := s.l.DomainGetBlockInfo(s.dom, d.target, 0)
	if err != nil {
		return backup.DiskInfo{}, err
	}
	return backup.DiskInfo{UUID: "libvirt:" + d.name, Size: int64(capacity)}, nil
}

// Snapshots implements backup.Host: the backup job is the source's own.
func (s *Source) Snapshots(ctx context.Context, disk string) ([]backup.Snapshot, error) {
	return nil, nil
}

// CreateSnapshot implements backup.Host: the first call begins one
// pull-mode backup job for every chosen disk (one freeze), creating a
// new checkpoint; later calls hand out their disk of it.
func (s *Source) CreateSnapshot(ctx context.Context, name, desc string) (backup.Snapshot, error) {
	d, err := s.disk(name)
	if err != nil {
		return backup.Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.job == nil || s.job.taken[d.target] {
		if s.job != nil {
			return backup.Snapshot{}, fmt.Errorf("%w: the domain's backup job still holds %s", backup.ErrBusy, d.target)
		}
		if s.job, err = s.begin(ctx); err != nil {
			return backup.Snapshot{}, err
		}
	}
	j := s.job
	j.taken[d.target], j.open[d.target] = true, true
	return backup.Snapshot{ID: j.id + "/" + d.target, ChangeID: j.changeID(d.target),
		Size: j.sizes[d.target], Created: j.created, Consistency: j.q.Consistency, ConsistencyReason: j.q.Reason}, nil
}

func (s *Source) prefix() string { return "blockwise-" + s.o.Tag + "-" }

// ownedCheckpoints are the domain's checkpoints of this owner, oldest
// first.
func (s *Source) ownedCheckpoints() ([]string, error) {
	cps, _, err := s.l.DomainListAllCheckpoints(s.dom, 1, 0)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range cps {
		if strings.HasPrefix(c.Name, s.prefix()) {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// begin starts the backup job, incremental from the newest owned
// checkpoint when libvirt accepts it, else full (and says why).
func (s *Source) begin(ctx context.Context) (*job, error) {
	s.seq++
	j := &job{id: fmt.Sprintf("bwlv-%d-%d", os.Getpid(), s.seq), sizes: map[string]int64{},
		taken: map[string]bool{}, open: map[string]bool{},
		newCP: s.prefix() + fmt.Sprintf("%019d", time.Now().UnixNano())}
	owned, err := s.ownedCheckpoints()
	if err != nil {
		return nil, err
	}
	if len(owned) > 0 {
		j.base = owned[len(owned)-1]
	}
	on, err := s.active()
	if err != nil {
		return nil, err
	}
	if !on && s.o.SSH != nil {
		return nil, fmt.Errorf("offline backup of %s: %w", s.o.Domain, errNoRemoteOffline)
	}
	if err := s.makeJobDir(ctx, j); err != nil {
		return nil, err
	}
	if !on {
		if err := s.beginOffline(ctx, j); err != nil {
			j.stopOffline()
			os.RemoveAll(j.dir)
			return nil, fmt.Errorf("offline backup of %s: %w", s.o.Domain, err)
		}
		j.created = time.Now()
		return j, nil
	}
	for _, d := range s.disks {
		info, err := s.Disk(ctx, d.name)
		if err != nil {
			return nil, err
		}
		j.sizes[d.target] = info.Size
	}
	j.q, err = quiesce.Run(ctx, s.o.Quiesce, func(ctx context.Context) error {
		err := s.l.DomainBackupBegin(s.dom, s.backupXML(j), golibvirt.OptString{s.checkpointXML(j)}, 0)
		if err != nil && j.base != "" {
			j.why = fmt.Sprintf("libvirt refused an incremental backup from checkpoint %s: %v", j.base, err)
			j.base = ""
			err = s.l.DomainBackupBegin(s.dom, s.backupXML(j), golibvirt.OptString{s.checkpointXML(j)}, 0)
		}
		return err
	})
	if err != nil {
		s.removeJobDir(j)
		return nil, fmt.Errorf("libvirt backup-begin of %s: %w", s.o.Domain, err)
	}
	j.created = time.Now()
	if s.o.SSH != nil {
		if j.tunnel, err = s.o.SSH.forward(ctx, j.sock); err != nil {
			s.l.DomainAbortJob(s.dom)
			s.removeJobDir(j)
			return nil, fmt.Errorf("forward the backup's NBD socket from %s: %w", s.o.SSH.Host, err)
		}
	}
	return j, nil
}

// makeJobDir makes the job's directory (scratch files, NBD socket): on
// the libvirt host, through ssh, for a remote one.
func (s *Source) makeJobDir(ctx context.Context, j *job) error {
	var dir string
	var err error
	if s.o.SSH != nil {
		dir, err = s.o.SSH.remoteDir(ctx, s.o.Scratch, "blockwise-libvirt-")
	} else if dir, err = os.MkdirTemp(s.o.Scratch, "blockwise-libvirt-"); err == nil {
		os.Chmod(dir, 0o777) // QEMU runs as libvirt-qemu and writes its scratch files here
	}
	if err != nil {
		return err
	}
	j.dir, j.sock = dir, filepath.Join(dir, "nbd.sock")
	return nil
}

// removeJobDir ends the job's tunnel and removes its directory.
func (s *Source) removeJobDir(j *job) error {
	j.tunnel.close()
	if s.o.SSH != nil {
		return s.o.SSH.removeRemoteDir(j.dir)
	}
	return os.RemoveAll(j.dir)
}

func (s *Source) backupXML(j *job) string {
	var b strings.Builder
	b.WriteString("<domainbackup mode='pull'>")
	if j.base != "" {
		fmt.Fprintf(&b, "<incremental>%s</incremental>", j.base)
	}
	fmt.Fprintf(&b, "<server transport='unix' socket='%s'/><disks>", xmlEscape(j.sock))
	for _, d := range s.disks {
		fmt.Fprintf(&b, "<disk name='%s' backup='yes' type='file'><scratch file='%s'/></disk>",
			d.target, xmlEscape(filepath.Join(j.dir, d.target+".scratch.qcow2")))
	}
	b.WriteString("</disks></domainbackup>")
	return b.String()
}

func (s *Source) checkpointXML(j *job) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<domaincheckpoint><name>%s</name><disks>", j.newCP)
	for _, d := range s.disks {
		fmt.Fprintf(&b, "<disk name='%s' checkpoint='bitmap'/>", d.target)
	}
	b.WriteString("</disks></domaincheckpoint>")
	return b.String()
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return strings.ReplaceAll(b.String(), "'", "&#39;")
}

// ChangedAreas implements backup.Host. An incremental needs the job to
// be incremental from the parent's checkpoint, at the same size.
func (s *Source) ChangedAreas(ctx context.Context, name, snap string, start int64, since string) (*backup.Areas, error) {
	d, j, err := s.jobOf(name, snap)
	if err != nil {
		return nil, err
	}
	size := j.sizes[d.target]
	if start > 0 {
		return &backup.Areas{StartOffset: start, Length: max(size-start, 1)}, nil
	}
	meta := "base:allocation"
	if since != "*" {
		if err := j.check(d.target, since, size); err != nil {
			return nil, fmt.Errorf("%w: disk %s: %v", backup.ErrChangeIDInvalid, d.target, err)
		}
		meta = j.bitmap(d.target)
	}
	areas, err := qemu.Areas(ctx, j.uri(d.target), meta, size)
	if err != nil {
		return nil, err
	}
	return &backup.Areas{StartOffset: 0, Length: size, Changed: areas}, nil
}

// check says why the job cannot answer "changed since" the change ID.
func (j *job) check(target, since string, size int64) error {
	name, sizeStr, ok := strings.Cut(since, ":")
	n, err := strconv.ParseInt(sizeStr, 10, 64)
	switch {
	case ok && err == nil && name == noCheckpoint:
		return errors.New("the last point was read with the domain shut off and no usable bitmap: there is no checkpoint to continue from")
	case !ok || err != nil || !strings.HasPrefix(name, "blockwise-"):
		return fmt.Errorf("change ID %q is not one of a libvirt checkpoint of blockwise", since)
	case n != size:
		return fmt.Errorf("disk resized from %d to %d bytes since the last point", n, size)
	case j.why != "":
		return errors.New(j.why)
	case j.offline[target] != nil && j.offline[target].why != "":
		return errors.New(j.offline[target].why)
	case j.base == "":
		return fmt.Errorf("checkpoint %s of the last point is missing (the domain was redefined, it was deleted, or blockwise restore wrote the disk)", name)
	case j.base != name:
		return fmt.Errorf("checkpoint %s of the last point is not the domain's newest of blockwise (%s)", name, j.base)
	}
	return nil
}

// jobOf returns the disk and the running job that handed out snap.
func (s *Source) jobOf(name, snap string) (disk, *job, error) {
	d, err := s.disk(name)
	if err != nil {
		return disk{}, nil, err
	}
	s.mu.Lock()
	j := s.job
	s.mu.Unlock()
	if j == nil || snap != j.id+"/"+d.target {
		return disk{}, nil, fmt.Errorf("%w: no backup job for %s", ErrNoDisk, snap)
	}
	return d, j, nil
}

// OpenView opens a disk's export of the backup job (backup.Options.Open).
func (s *Source) OpenView(ctx context.Context, name, snap string) (backup.Source, error) {
	d, j, err := s.jobOf(name, snap)
	if err != nil {
		return nil, err
	}
	return nbd.Dial(ctx, j.uri(d.target), nil)
}

// DeleteSnapshot implements backup.Host: the job ends when every disk it
// handed out is done; checkpoints older than its base are deleted.
func (s *Source) DeleteSnapshot(ctx context.Context, name, snap string) error {
	d, err := s.disk(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.job == nil {
		return nil
	}
	delete(s.job.open, d.target)
	if len(s.job.open) > 0 || len(s.job.taken) < len(s.disks) {
		return nil
	}
	return s.endJob()
}

func (s *Source) endJob() error {
	j := s.job
	s.job = nil
	if j.offline != nil { // no libvirt job, and no checkpoint to prune
		j.stopOffline()
		return os.RemoveAll(j.dir)
	}
	err := s.l.DomainAbortJob(s.dom)
	s.removeJobDir(j)
	if owned, lerr := s.ownedCheckpoints(); lerr == nil && j.base != "" {
		for _, c := range owned {
			if c < j.base { // older than the parent's: no use any more
				s.l.DomainCheckpointDelete(golibvirt.DomainCheckpoint{Name: c, Dom: s.dom}, 0)
			}
		}
	}
	return err
}

// Close ends a job still running and disconnects.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.job != nil {
		err = s.endJob()
	}
	return errors.Join(err, s.l.Disconnect())
}

// freezer freezes through libvirt (virDomainFSFreeze), which talks to the
// guest agent itself; the status comes from the agent through libvirt.
type freezer struct{ s *Source }

// Freeze implements quiesce.Freezer.
func (f freezer) Freeze(ctx context.Context) (int, error) {
	n, err := f.s.l.DomainFsfreeze(f.s.dom, nil, 0)
	return int(n), err
}

// Thaw implements quiesce.Freezer.
func (f freezer) Thaw(ctx context.Context) (int, error) {
	n, err := f.s.l.DomainFsthaw(f.s.dom, nil, 0)
	return int(n), err
}

// Status implements quiesce.Freezer.
func (f freezer) Status(ctx context.Context) (string, error) {
	out, err := f.s.l.QEMUDomainAgentCommand(f.s.dom, `{"execute":"guest-fsfreeze-status"}`, 5, 0)
	if err != nil {
		return "", err
	}
	if len(out) == 0 {
		return "", errors.New("guest agent: empty answer")
	}
	var r struct {
		Return string `json:"return"`
	}
	if err := json.Unmarshal([]byte(out[0]), &r); err != nil {
		return "", fmt.Errorf("guest agent: %w", err)
	}
	return r.Return, nil
}

// Close implements quiesce.Freezer.
func (f freezer) Close() error { return nil }
