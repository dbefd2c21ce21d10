package fileres

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
)

// Xattr is one extended attribute with its full Linux name
// ("user.mime", "security.selinux", "system.posix_acl_access"). POSIX
// ACLs are given in the xattr form setxattr(2) takes (version 2,
// little-endian 8-byte entries), whatever the filesystem stores (X4).
type Xattr struct {
	Name  string
	Value []byte
}

// XattrFS is an FS that keeps extended attributes (ext2/3/4, XFS).
type XattrFS interface {
	Xattrs(ctx context.Context, ino uint64) ([]Xattr, error)
}

// Bounds on what one file's attributes may make us allocate (F2, X2):
// Linux's own limits (XATTR_SIZE_MAX, XATTR_LIST_MAX) and the attribute
// count a 64 KiB list could hold.
const (
	maxXattrValue = 64 << 10
	maxXattrTotal = 1 << 20
	maxXattrCount = 64 << 10 / 2
)

// Xattrs lists ref's extended attributes sorted by name; a filesystem
// without them (FAT) and the directories above the filesystems have none.
func (p *Point) Xattrs(ctx context.Context, r Ref) ([]Xattr, error) {
	if r.synthetic() {
		return nil, nil
	}
	x, ok := r.Vol.FS.(XattrFS)
	if !ok {
		return nil, nil
	}
	out, err := x.Xattrs(ctx, r.Ino)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Vol.Path, err)
	}
	return out, nil
}

// xattrList collects a file's attributes under the bounds above; a name
// seen twice is damage (X3: one name, one value).
type xattrList struct {
	ino   uint64
	out   []Xattr
	bytes int
}

func (l *xattrList) add(name string, value []byte) error {
	l.bytes += len(name) + len(value)
	if len(value) > maxXattrValue || l.bytes > maxXattrTotal || len(l.out) >= maxXattrCount {
		return damaged("inode %d: extended attributes over %d bytes or %d names", l.ino, maxXattrTotal, maxXattrCount)
	}
	l.out = append(l.out, Xattr{Name: name, Value: value})
	return nil
}

func (l *xattrList) done() ([]Xattr, error) {
	sort.Slice(l.out, func(i, j int) bool { return l.out[i].Name < l.out[j].Name })
	for i := 1; i < len(l.out); i++ {
		if l.out[i].Name == l.out[i-1].Name {
			return nil, damaged("inode %d: extended attribute %q twice", l.ino, l.out[i].Name)
		}
	}
	return l.out, nil
}

// POSIX ACL tags (acl/acl.h), shared by ext4, XFS and the xattr form.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xFFFFFFFF // ACL_UNDEFINED_ID
)

const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

// aclEntry is one entry of a POSIX ACL.
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// aclXattr encodes entries in the xattr form: le32 version 2, then per
// entry le16 tag, le16 perm, le32 id (X4). Only the known tags pass.
func aclXattr(ents []aclEntry) ([]byte, error) {
	out := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range ents {
		switch e.tag {
		case aclUser, aclGroup:
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			e.id = aclNoID
		default:
			return nil, damaged("ACL entry with tag 0x%x", e.tag)
		}
		if e.perm > 7 {
			return nil, damaged("ACL entry with permissions 0x%x", e.perm)
		}
		out = binary.LittleEndian.AppendUint16(out, e.tag)
		out = binary.LittleEndian.AppendUint16(out, e.perm)
		out = binary.LittleEndian.AppendUint32(out, e.id)
	}
	return out, nil
}
