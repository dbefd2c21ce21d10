package main

import (
	"bytes"

	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/transport"
)

// read-test reads every allocated byte through the chosen transport and
// leaves no snapshot behind.
func TestReadTest(t *testing.T) {
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "16M")
	uri := "nbd+unix:///vm?socket=" + filepath.Join(d.dir, "nbd.sock")
	writeNBD(t, context.Background(), uri, 4096)
	writeNBD(t, context.Background(), uri, 8<<20)
	for _, mode := range []string{"hotadd", "san"} {
		var res transport.ReadTestResult
		d.jsonOut(t, &res, "read-test", "vm", "--transport", mode, "--san-datastore", d.dir)
		if !strings.HasPrefix(res.Transport, "transport "+mode) || res.Bytes < 8192 {
			t.Fatalf("%s: %+v", mode, res)
		}
	}
	var snaps []any
	d.jsonOut(t, &snaps, "snapshot", "list", "vm")
	if len(snaps) != 0 {
		t.Fatalf("read-test left snapshots: %v", snaps)
	}
}

// restore --to-uri writes into any NBD export.
func TestRestoreToURI(t *testing.T) {
	t.Setenv("BLOCKWISE_PASSWORD", "to-uri")
	t.Setenv("BLOCKWISE_REPO", filepath.Join(t.TempDir(), "repo"))
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "16M")
	d.must(t, "disk", "create", "copy", "--size", "16M")
	sock := filepath.Join(d.dir, "nbd.sock")
	ctx := context.Background()
	writeNBD(t, ctx, "nbd+unix:///vm?socket="+sock, 5<<20)
	d.must(t, "repo", "init")
	d.must(t, "backup", "vm")
	d.must(t, "restore", "latest", "--to-uri", "nbd+unix:///copy?socket="+sock)
	a, b := readAll(t, "nbd+unix:///vm?socket="+sock), readAll(t, "nbd+unix:///copy?socket="+sock)
	if !bytes.Equal(a, b) || bytes.Equal(a, make([]byte, len(a))) {
		t.Fatal("restore --to-uri: the copy differs from the disk")
	}
}

func readAll(t *testing.T, uri string) []byte {
	t.Helper()
	c, err := nbd.Dial(context.Background(), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := make([]byte, c.Size())
	if err := c.ReadAt(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// read-test --workers below 1 is a usage error (0 used to hang: no read
// could ever start), refused before the host is asked for a snapshot.
func TestReadTestWorkers(t *testing.T) {
	c := &cli{dir: t.TempDir()}
	for _, w := range []string{"0", "-1"} {
		if out, code := c.run(t, "read-test", "vm", "--workers", w); code != exitUsage || !strings.Contains(out, "--workers") {
			t.Fatalf("--workers %s: exit %d: %s", w, code, out)
		}
	}
}
