package fileres

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// Extended attributes written by the real tools (mke2fs -d copying a
// tree set with setfattr; the kernel's XFS through a loop mount, cp -a)
// come back identical through restore --include, the tar of dump and the
// FUSE mount, as getfattr -d -m - sees them: user., trusted., security.
// and the POSIX ACLs, in the inode and in an xattr block (ext), short
// form, leaf, node and remote values (XFS).
func TestXattrs(t *testing.T) {
	for _, c := range []struct {
		name string
		// mk builds img from tree and returns the source's attributes
		mk func(t *testing.T, tree, img string) string
		// onXFS: restore into an XFS too (the host's /tmp does not hold
		// 300 attributes on a file)
		onXFS bool
	}{
		{"ext4", func(t *testing.T, tree, img string) string {
			imagetest.Ext(t, "ext4", tree, img, 16, "-b", "4096")
			return imagetest.Getfattr(t, filepath.Join(tree, "x"))
		}, false},
		{"ext3-128-byte-inodes", func(t *testing.T, tree, img string) string {
			imagetest.Ext(t, "ext3", tree, img, 16, "-b", "4096", "-I", "128") // every attribute in the block
			return imagetest.Getfattr(t, filepath.Join(tree, "x"))
		}, false},
		{"ext4-ea-inode", func(t *testing.T, tree, img string) (want string) {
			// A 20 KiB value lives in an inode of its own (ea_inode); the
			// host's /tmp cannot hold it, so the source tree is on an XFS.
			imagetest.XFSMounted(t, img+".src", 64, func(mnt string) {
				imagetest.Run(t, nil, "cp", "-a", tree+"/.", mnt)
				huge := filepath.Join(mnt, "x", "huge")
				imagetest.Run(t, nil, "touch", huge)
				imagetest.Run(t, nil, "setfattr", "-n", "user.huge", "-v", "0s"+strings.Repeat("QUJD", 20<<10/3), huge)
				imagetest.Ext(t, "ext4", mnt, img, 32, "-b", "4096", "-O", "ea_inode")
				want = imagetest.Getfattr(t, filepath.Join(mnt, "x"))
			})
			return want
		}, true},
		{"xfs", func(t *testing.T, tree, img string) (want string) {
			imagetest.XFSMounted(t, img, 64, func(mnt string) {
				imagetest.Run(t, nil, "cp", "-a", tree+"/.", mnt)
				imagetest.ManyXattrs(t, mnt)
				want = imagetest.Getfattr(t, filepath.Join(mnt, "x"))
			})
			return want
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			tree, img := filepath.Join(dir, "tree"), filepath.Join(dir, "img")
			imagetest.XattrTree(t, tree)
			want := c.mk(t, tree, img)
			p := openTestPoint(t, img)
			restore := func(out string) {
				st, err := p.Restore(context.Background(), []string{"/disk/x"}, out)
				if err != nil {
					t.Fatal(err)
				}
				if got := imagetest.Getfattr(t, filepath.Join(out, "disk/x")); got != want {
					t.Errorf("restored attributes:\n%s\nwant:\n%s", got, want)
				}
				if st.Xattrs == 0 || st.SkippedXattrs != 0 {
					t.Errorf("stats: %d set, %d skipped", st.Xattrs, st.SkippedXattrs)
				}
			}
			if c.onXFS {
				imagetest.XFSMounted(t, filepath.Join(dir, "target"), 64, restore)
			} else {
				restore(t.TempDir())
			}
			checkTarXattrs(t, p)
			checkMountXattrs(t, p, want)
		})
	}
}

// checkTarXattrs: dump's tar carries the attributes as SCHILY.xattr.*.
func checkTarXattrs(t *testing.T, p *Point) {
	t.Helper()
	ctx := context.Background()
	ref, err := p.Lookup(ctx, "/disk/x")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.WriteTar(ctx, &buf, "x", ref); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.PAXRecords
	}
	for name, kv := range map[string][2]string{
		"x/plain": {"SCHILY.xattr.user.mime", "text/plain"},
		"x/ln":    {"SCHILY.xattr.trusted.l", "on a symlink"},
		"x/dir/":  {"SCHILY.xattr.user.d", "on a directory"},
	} {
		if v, ok := got[name][kv[0]]; !ok || v != kv[1] {
			t.Errorf("tar %s: %s = %q (%v), want %q", name, kv[0], v, ok, kv[1])
		}
	}
	if acl := got["x/acl"]["SCHILY.xattr.system.posix_acl_access"]; len(acl) != 4+5*8 {
		t.Errorf("tar x/acl: ACL of %d bytes, want 44", len(acl))
	}
}

// checkMountXattrs: getfattr through the FUSE mount sees what the source
// tree had.
func checkMountXattrs(t *testing.T, p *Point, want string) {
	t.Helper()
	needFUSE(t)
	mnt := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- p.Mount(ctx, mnt, MountOptions{Ready: func() { close(ready) }}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	got := imagetest.Getfattr(t, filepath.Join(mnt, "disk/x"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("attributes through the mount:\n%s\nwant:\n%s", got, want)
	}
}
