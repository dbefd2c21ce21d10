package imagetest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// ACL values in the xattr form setfattr takes (hex, version 2): a file's
// owner rw-, named user 12345 r--, group r--, mask r--, other r--; and a
// directory's default ACL with named group 4242 r-x.
const (
	fileACL    = "0x0200000001000600ffffffff020004003930000004000400ffffffff10000400ffffffff20000400ffffffff"
	defaultACL = "0x0200000001000700ffffffff04000500ffffffff080005009210000010000500ffffffff20000500ffffffff"
)

// XattrTree writes under dir/x files whose extended attributes a restore
// must reproduce: user.*, trusted.* and security.* values (one empty),
// an access ACL, a directory's default ACL, a 3,500-byte value (an ext4
// xattr block, an XFS remote value) and a symlink's trusted.* attribute.
// Skips where setfattr is missing.
func XattrTree(t testing.TB, dir string) {
	t.Helper()
	NeedTools(t, "setfattr", "getfattr")
	x := filepath.Join(dir, "x")
	must(t, os.MkdirAll(filepath.Join(x, "dir"), 0o755))
	for _, f := range []string{"plain", "acl", "big"} {
		must(t, os.WriteFile(filepath.Join(x, f), []byte(f+"\n"), 0o644))
	}
	must(t, os.Symlink("plain", filepath.Join(x, "ln")))
	set := func(name, value, path string) {
		Run(t, nil, "setfattr", "-h", "-n", name, "-v", value, filepath.Join(x, path))
	}
	set("user.mime", "text/plain", "plain")
	set("user.empty", `""`, "plain")
	set("trusted.t", "trusted-value", "plain")
	set("security.s", "security-value", "plain")
	set("system.posix_acl_access", fileACL, "acl")
	set("user.d", "on a directory", "dir")
	set("system.posix_acl_default", defaultACL, "dir")
	set("user.big", "0s"+strings.Repeat("QUJD", 1166), "big")
	set("trusted.l", "on a symlink", "ln")
}

// ManyXattrs makes dir/x/many with 300 attributes (XFS leaf and node
// blocks; more than ext4's one block, or a host's /tmp, holds).
func ManyXattrs(t testing.TB, dir string) {
	t.Helper()
	p := filepath.Join(dir, "x", "many")
	must(t, os.WriteFile(p, nil, 0o644))
	for i := range 300 {
		Run(t, nil, "setfattr", "-n", fmt.Sprintf("user.attribute-%03d", i), "-v", fmt.Sprintf("value-%03d-%s", i, strings.Repeat("v", i%50)), p)
	}
}

// Getfattr dumps every extended attribute under dir (getfattr -R -h -d
// -m - -e hex, paths relative to dir), to compare two trees with: files
// in name order, each file's attributes in name order (listxattr's order
// is the filesystem's).
func Getfattr(t testing.TB, dir string) string {
	t.Helper()
	out, err := runIn(dir, "getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", ".")
	if err != nil {
		t.Fatalf("getfattr in %s: %v: %s", dir, err, out)
	}
	blocks := strings.Split(strings.TrimSpace(string(out)), "\n\n")
	for i, b := range blocks {
		lines := strings.Split(b, "\n")
		sort.Strings(lines[1:]) // after "# file: P"
		blocks[i] = strings.Join(lines, "\n")
	}
	sort.Strings(blocks)
	return strings.Join(blocks, "\n\n")
}
