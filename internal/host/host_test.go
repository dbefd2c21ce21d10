package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/cbt"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/nbd"
)

// newEnv is a host serving a fresh datastore over NBD on a unix socket
// and one TCP path (apitest).
func newEnv(t *testing.T) *apitest.Env {
	t.Helper()
	return apitest.Start(t, apitest.Options{NBD: true, TCPPaths: 1})
}

func need(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed: the test command installs qemu-utils and libnbd-bin", bin)
		}
		t.Skipf("%s not installed", bin)
	}
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// image is 8 MiB: data at 0 and 5 MiB, the rest zero.
func image() []byte {
	b := make([]byte, 8<<20)
	copy(b, randomBytes(1<<20, 1))
	copy(b[5<<20:], randomBytes(256<<10, 2))
	return b
}

// qemu-img writes a file into a live disk, a snapshot freezes it, writes
// go on, and qemu-img/nbdcopy read back each state byte for byte.
func TestQemuImgAndNbdcopyRoundTrip(t *testing.T) {
	need(t, "qemu-img")
	need(t, "nbdcopy")
	e := newEnv(t)
	d, err := e.Host.Create("vm", 8<<20, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.raw")
	want := image()
	os.WriteFile(in, want, 0o600)
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in, e.UnixURI("vm"))
	if _, err := d.CreateSnapshot("s1", ""); err != nil {
		t.Fatal(err)
	}
	after := bytes.Clone(want)
	copy(after[2<<20:], randomBytes(64<<10, 3))
	os.WriteFile(in, after, 0o600)
	run(t, "nbdcopy", in, e.TCPURI(0, "vm")) // the whole image again: the live disk changes

	for _, c := range []struct {
		export string
		want   []byte
	}{{"vm@s1", want}, {"vm", after}} {
		out := filepath.Join(dir, "out.raw")
		os.Remove(out)
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", e.UnixURI(c.export), out)
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, c.want) {
			t.Fatalf("qemu-img convert from %s differs", c.export)
		}
		run(t, "nbdcopy", e.TCPURI(0, c.export), out)
		got, _ = os.ReadFile(out)
		if !bytes.Equal(got, c.want) {
			t.Fatalf("nbdcopy from %s differs", c.export)
		}
	}
}

func TestSnapshotExportIsReadOnly(t *testing.T) {
	need(t, "qemu-io")
	e := newEnv(t)
	d, _ := e.Host.Create("vm", 1<<20, disk.Options{})
	d.CreateSnapshot("s1", "")
	cmd := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", e.UnixURI("vm@s1"))
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "Permission denied") && !strings.Contains(string(out), "Operation not permitted") {
		t.Fatalf("write to snapshot export: %s", out)
	}
	c, err := nbd.Dial(context.Background(), e.UnixURI("vm@s1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteAt(context.Background(), make([]byte, 4096), 0, false); !errors.Is(err, nbd.ErrReadOnly) {
		t.Fatalf("write to snapshot over NBD: %v, want EPERM", err)
	}
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 4k 4k", e.UnixURI("vm"))
	out2 := run(t, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 4k 4k", e.UnixURI("vm"))
	if strings.Contains(out2, "Pattern verification failed") {
		t.Fatal(out2)
	}
}

type mapEntry struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	Type        uint32 `json:"type"`
	Description string `json:"description"`
}

func nbdinfoMap(t *testing.T, context, uri string) []mapEntry {
	out := run(t, "nbdinfo", "--json", "--map="+context, uri)
	var m []mapEntry
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("nbdinfo output %q: %v", out, err)
	}
	return m
}

// The exact extents of base:allocation and of the CBT context after
// known writes, as nbdinfo (libnbd) and qemu-img map see them.
func TestNbdinfoMaps(t *testing.T) {
	need(t, "nbdinfo")
	e := newEnv(t)
	d, _ := e.Host.Create("vm", 16<<20, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	d.WriteAt(randomBytes(1<<20, 1), 0)
	s1, _ := d.CreateSnapshot("s1", "")
	d.WriteAt(randomBytes(4096, 2), 3<<20)    // dirty block at 3 MiB
	d.WriteAt(randomBytes(128<<10, 3), 8<<20) // two dirty blocks at 8 MiB
	d.Zero(0, 64<<10, true)                   // zeroing counts as a change
	d.CreateSnapshot("s2", "")

	alloc := nbdinfoMap(t, "base:allocation", e.UnixURI("vm@s2"))
	wantAlloc := []mapEntry{{0, 64 << 10, 3, ""}, {64 << 10, 1<<20 - 64<<10, 0, ""}, {1 << 20, 2 << 20, 3, ""},
		{3 << 20, 4096, 0, ""}, {3<<20 + 4096, 5<<20 - 4096, 3, ""}, {8 << 20, 128 << 10, 0, ""}, {8<<20 + 128<<10, 8<<20 - 128<<10, 3, ""}}
	compareMap(t, "base:allocation", alloc, wantAlloc)

	dirty := nbdinfoMap(t, nbd.DirtyBitmapPrefix+s1.ChangeID, e.UnixURI("vm@s2"))
	wantDirty := []mapEntry{{0, 64 << 10, 1, ""}, {64 << 10, 3<<20 - 64<<10, 0, ""}, {3 << 20, 64 << 10, 1, ""},
		{3<<20 + 64<<10, 5<<20 - 64<<10, 0, ""}, {8 << 20, 128 << 10, 1, ""}, {8<<20 + 128<<10, 8<<20 - 128<<10, 0, ""}}
	compareMap(t, "dirty", dirty, wantDirty)

	list := run(t, "nbdinfo", "--list", "--content", e.UnixURI(""))
	for _, want := range []string{"vm@s1", "vm@s2", nbd.DirtyBitmapPrefix + s1.ChangeID} {
		if !strings.Contains(list, want) {
			t.Errorf("nbdinfo --list lacks %s:\n%s", want, list)
		}
	}
}

func compareMap(t *testing.T, name string, got, want []mapEntry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %+v\nwant %+v", name, got, want)
	}
	for i := range got {
		if got[i].Offset != want[i].Offset || got[i].Length != want[i].Length || got[i].Type != want[i].Type {
			t.Fatalf("%s extent %d: got %+v want %+v\nall: %+v", name, i, got[i], want[i], got)
		}
	}
}

// QEMU reads CBT through x-dirty-bitmap with REQ_ONE requests.
func TestQemuImgMapDirtyBitmap(t *testing.T) {
	need(t, "qemu-img")
	e := newEnv(t)
	d, _ := e.Host.Create("vm", 4<<20, disk.Options{CBT: cbt.Config{Granularity: 64 << 10}})
	s1, _ := d.CreateSnapshot("s1", "")
	d.WriteAt(randomBytes(4096, 1), 1<<20)
	d.CreateSnapshot("s2", "")
	opts := fmt.Sprintf("driver=nbd,server.type=unix,server.path=%s,export=vm@s2,x-dirty-bitmap=%s%s", e.NBDSock, nbd.DirtyBitmapPrefix, s1.ChangeID)
	out := run(t, "qemu-img", "map", "--output=json", "--image-opts", opts)
	var m []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	// x-dirty-bitmap inverts: dirty shows as data=false.
	var dirty []int64
	for _, x := range m {
		if !x.Data {
			dirty = append(dirty, x.Start, x.Length)
		}
	}
	if len(dirty) != 2 || dirty[0] != 1<<20 || dirty[1] != 64<<10 {
		t.Fatalf("qemu-img map of the dirty bitmap: %s", out)
	}
}

// Several writer connections, then a flush, then a read-back.
func TestConcurrentWriterConnections(t *testing.T) {
	e := newEnv(t)
	e.Host.Create("vm", 16<<20, disk.Options{})
	ctx := context.Background()
	want := make([]byte, 16<<20)
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := nbd.Dial(ctx, e.UnixURI("vm"), nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer cl.Close()
			for i := c; i < 256; i += 4 {
				p := randomBytes(64<<10, int64(i))
				if err := cl.WriteAt(ctx, p, int64(i)*64<<10, false); err != nil {
					t.Error(err)
				}
			}
			if err := cl.Flush(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := 0; i < 256; i++ {
		copy(want[i*64<<10:], randomBytes(64<<10, int64(i)))
	}
	wg.Wait()
	cl, err := nbd.Dial(ctx, e.TCPURI(0, "vm"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := make([]byte, len(want))
	if err := cl.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read-back differs")
	}
}

func TestUnknownExportsAndContexts(t *testing.T) {
	e := newEnv(t)
	d, _ := e.Host.Create("vm", 1<<20, disk.Options{})
	d.CreateSnapshot("s1", "")
	ctx := context.Background()
	for _, name := range []string{"nope", "vm@nope", "../x", "vm@"} {
		if c, err := nbd.Dial(ctx, e.UnixURI(name), nil); err == nil {
			c.Close()
			t.Errorf("export %q opened", name)
		}
	}
	c, err := nbd.Dial(ctx, e.UnixURI("vm@s1"), &nbd.ClientOptions{MetaContexts: []string{nbd.DirtyBitmapPrefix + "bogus/1"}})
	if err == nil {
		defer c.Close()
		if _, err := c.BlockStatus(ctx, nbd.DirtyBitmapPrefix+"bogus/1", 0, 4096, false); err == nil {
			t.Error("block status for an unknown change ID answered")
		}
	}
}
