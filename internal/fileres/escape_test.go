package fileres

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockwise/blockwise/internal/fileres/imagetest"
)

// A hostile image: a directory holds a symlink to a place outside the
// restore target and, under the same name, a directory with a file. The
// directory is refused as damaged (two entries of one name), so nothing
// is written through the symlink, and nothing appears outside the
// target. (Below that check, restore writes through an os.Root, which
// refuses to follow a symlink out of the target.)
func TestRestoreDoesNotFollowImageSymlinks(t *testing.T) {
	imagetest.NeedTools(t, "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	src, img := filepath.Join(dir, "src"), filepath.Join(dir, "img")
	os.MkdirAll(filepath.Join(src, "d/xy"), 0o755)
	os.WriteFile(filepath.Join(src, "d/xy/planted"), []byte("payload"), 0o644)
	imagetest.Run(t, nil, "mkfs.ext4", "-q", "-F", "-O", "^metadata_csum", "-d", src, img, "8M")
	imagetest.Run(t, nil, "debugfs", "-w", "-R", "symlink /d/xx "+outside, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// Rename the directory "xy" to "xx" in its directory block: name
	// length 2, type directory.
	i := bytes.Index(b, []byte("\x02\x02xy"))
	if i < 0 {
		t.Fatal("directory entry xy not found")
	}
	b[i+3] = 'x'
	os.WriteFile(img, b, 0o644)
	p := openTestPoint(t, img)
	if _, err := p.ReadDir(context.Background(), mustLookup(t, p, "/disk/d")); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a directory with two entries named xx: %v, want ErrDamaged", err)
	}
	if _, err = p.Restore(context.Background(), []string{"/disk/d"}, filepath.Join(dir, "out")); !errors.Is(err, ErrDamaged) {
		t.Errorf("restore of the hostile directory: %v, want ErrDamaged", err)
	}
	if _, err := os.Lstat(outside); !os.IsNotExist(err) {
		t.Fatalf("the restore wrote outside its target: %v", err)
	}
}

func mustLookup(t *testing.T, p *Point, path string) Ref {
	t.Helper()
	r, err := p.Lookup(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
