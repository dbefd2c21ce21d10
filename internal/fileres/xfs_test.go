package fileres

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// XFS images made by mkfs.xfs and filled through a loop mount by the
// kernel (imagetest.XFS): the guest tree, fragmented files, an extent
// B+tree, directories in every form. The restore of the whole
// filesystem must equal the mounted filesystem's own copy (ref) byte for
// byte, with owners, nanosecond times, links and holes.
func TestXFSRestore(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, typ string
		long      bool // BLOCKWISE_LONG only: a build takes ~10 s
		mkfs      []string
	}{
		{"v5", "xfs v5", false, nil},
		{"1k-blocks-8k-dirs", "xfs v5", true, []string{"-b", "size=1024", "-n", "size=8192"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.long && os.Getenv("BLOCKWISE_LONG") == "" {
				t.Skip("BLOCKWISE_LONG=1 runs it")
			}
			dir := t.TempDir()
			tree, ref, img := filepath.Join(dir, "tree"), filepath.Join(dir, "ref"), filepath.Join(dir, "xfs.img")
			imagetest.Tree(t, tree, 20)
			imagetest.XFS(t, tree, img, ref, 128, c.mkfs...)
			p := openTestPoint(t, img)
			if len(p.Volumes) != 1 || p.Volumes[0].FS == nil || p.Volumes[0].FS.Type() != c.typ {
				t.Fatalf("volumes: %+v", p.Volumes[0])
			}
			checkXFSFormats(t, p, img)
			out := t.TempDir()
			if _, err := p.Restore(ctx, []string{"/disk"}, out); err != nil {
				t.Fatal(err)
			}
			imagetest.CompareTree(t, ref, filepath.Join(out, "disk"), imagetest.CompareOptions{Sparse: true})
		})
	}
}

// checkXFSFormats makes sure the image holds what the test means to
// read: the data fork formats as xfs_db reports them.
func checkXFSFormats(t *testing.T, p *Point, img string) {
	t.Helper()
	for path, want := range map[string]string{
		"/disk/dir5": "local", "/disk/etc": "local", "/disk/dir60": "extents", "/disk/dir600": "extents", "/disk/dir5000": "btree",
		"/disk/frag/holes": "btree", "/disk/frag/a": "", "/disk/link-long": "", "/disk/frag/link-remote": "extents", "/disk/link-short": "local",
	} {
		r, err := p.Lookup(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		out := imagetest.Run(t, nil, "xfs_db", "-r", "-c", "inode "+strconv.FormatUint(r.Ino, 10), "-c", "print core.format core.nextents", img)
		if want != "" && !strings.Contains(out, "("+want+")") {
			t.Errorf("%s: xfs_db says %s, want %s", path, strings.TrimSpace(out), want)
		}
		t.Logf("%s: %s", path, strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
	}
}
