package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
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
		var res readTestResult
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
