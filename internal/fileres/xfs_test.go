package fileres

import (
	"bytes"
	"context"
	"fmt"
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

// TestXFSv4 reads v4 filesystems (no CRCs, with and without file types in
// directory entries), which this kernel no longer mounts: mkfs.xfs -p
// fills them from a proto file instead.
func TestXFSv4(t *testing.T) {
	imagetest.NeedTools(t, "mkfs.xfs")
	dir := t.TempDir()
	data := bytes.Repeat([]byte("v4 data "), 1250)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	target := strings.Repeat("x/", 300) // 600 bytes: a remote symlink
	var proto strings.Builder
	fmt.Fprintf(&proto, "/dev/null\n0 0\nd--755 0 0\nf ---640 1000 100 %s\ns l--777 0 0 %s\n", src, target)
	for _, n := range []int{60, 600} {
		fmt.Fprintf(&proto, "d%d d--755 0 0\n", n)
		for i := range n {
			fmt.Fprintf(&proto, "name-of-entry-%05d ---600 0 0 %s\n", i, src)
		}
		proto.WriteString("$\n")
	}
	proto.WriteString("$\n")
	pf := filepath.Join(dir, "proto")
	if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"TEST_DIR=/tmp", "TEST_DEV=/dev/null", "QA_CHECK_FS=1"}
	for _, ftype := range []string{"ftype=0", "ftype=1"} {
		t.Run(ftype, func(t *testing.T) {
			img := filepath.Join(dir, ftype+".img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Truncate(img, 32<<20)
			imagetest.Run(t, env, "mkfs.xfs", "-q", "-f", "-m", "crc=0", "-n", ftype, "-p", pf, img)
			checkXFSv4(t, openTestPoint(t, img), data, target)
		})
	}
}

func checkXFSv4(t *testing.T, p *Point, data []byte, target string) {
	t.Helper()
	ctx := context.Background()
	if typ := p.Volumes[0].FS.Type(); typ != "xfs v4" {
		t.Fatalf("type %q", typ)
	}
	for _, n := range []int{60, 600} {
		r, err := p.Lookup(ctx, fmt.Sprintf("/disk/d%d", n))
		if err != nil {
			t.Fatal(err)
		}
		ents, err := p.ReadDir(ctx, r)
		if err != nil || len(ents) != n || ents[n-1].Name != fmt.Sprintf("name-of-entry-%05d", n-1) {
			t.Fatalf("d%d: %d entries, %v", n, len(ents), err)
		}
	}
	r, err := p.Lookup(ctx, "/disk/f")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stat(ctx, r)
	f, err := p.Open(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+10)
	n, _ := f.ReadAt(got, 0)
	if !bytes.Equal(got[:n], data) || st.Uid != 1000 || st.Gid != 100 || st.Mode != ModeRegular|0o640 {
		t.Errorf("file: %d bytes, %+v", n, st)
	}
	if r, err = p.Lookup(ctx, "/disk/s"); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Readlink(ctx, r); got != target || err != nil {
		t.Errorf("symlink: %q %v", got, err)
	}
}
