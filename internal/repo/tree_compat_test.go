package repo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/hashtree"
)

// encodedTree is the tree of treeImg whose changed groups the test
// stores itself, encoded by enc (a version 1 writer's, or a tampered
// one), before the writer would.
type encodedTree struct {
	FullTree
	ids  map[int]ID
	keep map[int]bool // groups unchanged since the parent
}

func (e encodedTree) Changed(g int) bool { return !e.keep[g] }

func (e encodedTree) StoredGroup(g int) (ID, bool) { id, ok := e.ids[g]; return id, ok }

// writeEncodedPoint commits img as a point whose tree is treeImg's (img
// itself unless a test lies), each group stored as enc encodes it.
func writeEncodedPoint(t *testing.T, r *Repository, parent *Manifest, img, treeImg []byte, bs int, keep map[int]bool, enc func(g int, s *hashtree.SparseLeaves) []byte) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, parent, Meta{Disk: "vm", Size: uint64(len(img))})
	if err != nil {
		t.Fatal(err)
	}
	cs := int(r.Config().ChunkSize)
	for s := 0; s*cs < len(img); s++ {
		if err := w.PutChunk(ctx, uint64(s), img[s*cs:min((s+1)*cs, len(img))]); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := hashtree.Build(ctx, bytes.NewReader(treeImg), int64(len(treeImg)), bs, 1)
	if err != nil {
		t.Fatal(err)
	}
	pt := encodedTree{FullTree{tr}, map[int]ID{}, keep}
	for g := range TreeGroups(tr.Size(), bs) {
		if keep[g] {
			continue
		}
		l, _ := pt.GroupLeaves(g)
		if plain := enc(g, l); plain != nil {
			id := r.crypt.blobID(plain)
			if err := w.store(ctx, BlobPage, id, plain); err != nil {
				t.Fatal(err)
			}
			pt.ids[g] = id
		}
	}
	if err := w.SetTree(pt, true); err != nil {
		t.Fatal(err)
	}
	m, err := w.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// thinImage is 9000 blocks of 512 bytes (groups of 4096, 4096 and 808)
// with data in the blocks listed.
func thinImage(blocks ...int) []byte {
	img := make([]byte, 9000*512)
	for _, b := range blocks {
		img[b*512+7] = byte(b) | 1
	}
	return img
}

func v2Encoder(_ int, s *hashtree.SparseLeaves) []byte { return encodeTreeGroup(s) }

func v1Encoder(_ int, s *hashtree.SparseLeaves) []byte {
	if s.DataLen() == 0 {
		return nil
	}
	return encodeV1(s)
}

func versionOf(t *testing.T, r *Repository, id ID) byte {
	t.Helper()
	plain, err := r.loadBlobFrom(context.Background(), r.idx, BlobPage, id)
	if err != nil {
		t.Fatal(err)
	}
	return plain[4]
}

// TestTreeVersion1Readable: a repository whose points' groups are
// version 1 (written before version 2) loads, proves with
// check --read-data and takes an incremental whose changed groups are
// version 2 beside the parent's version 1 ones (T3, T10).
func TestTreeVersion1Readable(t *testing.T) {
	ctx := context.Background()
	r := initRepo(t, mem.New(), testOptions())
	img := thinImage(5, 4000, 4100, 8999)
	old := writeEncodedPoint(t, r, nil, img, img, 512, nil, v1Encoder)
	img2 := thinImage(5, 4000, 4100, 8999, 4200)
	img2[5*512] = 0xaa
	inc := writeEncodedPoint(t, r, old, img2, img2, 512, map[int]bool{2: true}, v2Encoder)
	for _, m := range []*Manifest{old, inc} {
		if _, err := r.LoadTree(ctx, m); err != nil {
			t.Fatal(err)
		}
		for g := range m.Tree.Groups {
			if _, err := r.LoadTreeGroup(ctx, m, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	if versionOf(t, r, old.Tree.Groups[0]) != 1 || versionOf(t, r, inc.Tree.Groups[0]) != 2 || inc.Tree.Groups[2] != old.Tree.Groups[2] {
		t.Fatal("want the parent's version 1 groups, the incremental's changed ones in version 2, its unchanged ones the parent's")
	}
	res, err := r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || res.RootsProven != 2 {
		t.Fatalf("check: %v, %v, %d roots proven", err, res.Err(), res.RootsProven)
	}
}

// TestSparseTreeTampered: a version 2 group that drops a data leaf (a
// hole claimed where the image has data), adds one (data claimed in a
// hole) or moves one is refused against the manifest's tops (T7) and
// root (T4); a tree whose root was computed over such a lie is refused
// by check --read-data against the chunks (T6). A hole is proven a hole
// as a dense group proves it.
func TestSparseTreeTampered(t *testing.T) {
	ctx := context.Background()
	img := thinImage(5, 4000, 4100, 8999)
	for _, tc := range []struct {
		name string
		lie  func(s *hashtree.SparseLeaves)
	}{
		{"drop", func(s *hashtree.SparseLeaves) { s.Set(5, hashtree.ZeroLeaf(512)) }},
		{"add", func(s *hashtree.SparseLeaves) { s.Set(6, s.At(5)) }},
		{"move", func(s *hashtree.SparseLeaves) { s.Set(6, s.At(5)); s.Set(5, hashtree.ZeroLeaf(512)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allowDamage(t)
			r := initRepo(t, mem.New(), testOptions())
			m := writeEncodedPoint(t, r, nil, img, img, 512, nil, func(g int, s *hashtree.SparseLeaves) []byte {
				if g == 0 {
					tc.lie(s)
				}
				return encodeTreeGroup(s)
			})
			if versionOf(t, r, m.Tree.Groups[0]) != 2 {
				t.Fatal("the tampered group is not version 2")
			}
			if _, err := r.LoadTree(ctx, m); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("LoadTree: %v, want ErrCorrupt", err)
			}
			if _, err := r.LoadTreeGroup(ctx, m, 0); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("LoadTreeGroup: %v, want ErrCorrupt", err)
			}
			if _, err := r.Check(ctx, CheckOptions{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("check: %v, want ErrCorrupt", err)
			}
			// The same lie with a root computed over it: only the chunks tell.
			lied := bytes.Clone(img)
			switch tc.name {
			case "drop":
				clear(lied[5*512 : 6*512])
			case "add":
				copy(lied[6*512:7*512], img[5*512:6*512])
			case "move":
				copy(lied[6*512:7*512], img[5*512:6*512])
				clear(lied[5*512 : 6*512])
			}
			r2 := initRepo(t, mem.New(), testOptions())
			m2 := writeEncodedPoint(t, r2, nil, img, lied, 512, nil, v2Encoder)
			if _, err := r2.LoadTree(ctx, m2); err != nil {
				t.Fatal(err)
			}
			res, err := r2.Check(ctx, CheckOptions{ReadData: true})
			if !errors.Is(err, ErrCorrupt) || res.RootsProven != 0 {
				t.Fatalf("check --read-data: %v, %d roots proven; want ErrCorrupt, none", err, res.RootsProven)
			}
		})
	}
}
