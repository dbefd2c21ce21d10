package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	"github.com/blockwise/blockwise/internal/nbd"
)

// The CLI end to end against a real S3 server: backup, incremental,
// restore bit-identical, check --read-data.
func TestCLIWithS3Repository(t *testing.T) {
	srv, err := s3test.Start("")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defer srv.Stop()
	ctx := context.Background()
	if err := srv.MakeBucket(ctx, "backups"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	t.Setenv("BLOCKWISE_PASSWORD", "s3 cli test")
	t.Setenv("BLOCKWISE_REPO", srv.URL("backups", "cli"))
	d := startServe(t)
	d.must(t, "disk", "create", "vm", "--size", "32M")
	uri := "nbd+unix:///vm?socket=" + filepath.Join(d.dir, "nbd.sock")
	c, err := nbd.Dial(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write := func(off int64, b byte) {
		if err := c.WriteAt(ctx, bytes.Repeat([]byte{b}, 256<<10), off, false); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 1)
	write(20<<20, 2)
	d.must(t, "repo", "init")
	d.must(t, "backup", "vm")
	write(4<<20, 3)
	out := d.must(t, "backup", "vm")
	if !strings.Contains(out, "incremental") {
		t.Fatalf("second backup: %s", out)
	}
	if info := d.must(t, "repo", "info"); !strings.Contains(info, "s3:") {
		t.Fatalf("repo info does not name the S3 backend: %s", info)
	}
	d.must(t, "check", "--read-data")
	file := filepath.Join(t.TempDir(), "vm.raw")
	d.must(t, "restore", "latest", "--to", file)
	got, _ := os.ReadFile(file)
	want := make([]byte, 32<<20)
	if err := c.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("restore from S3 differs from the disk")
	}
	// A lost index object: prune refuses, repair index rebuilds it from
	// the packs' headers (ranged GETs), and the point restores again.
	mc, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	var removed int
	for o := range mc.ListObjects(ctx, "backups", minio.ListObjectsOptions{Prefix: "cli/index/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if err := mc.RemoveObject(ctx, "backups", o.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		removed++
	}
	if removed == 0 {
		t.Fatal("no index object in the bucket")
	}
	if out, code := d.run(t, "prune"); code != exitCorrupt {
		t.Fatalf("prune with the index objects gone: exit %d: %s", code, out)
	}
	d.must(t, "repair", "index")
	d.must(t, "check", "--read-data")
	os.Remove(file)
	d.must(t, "restore", "latest", "--to", file)
	if got, _ = os.ReadFile(file); !bytes.Equal(got, want) {
		t.Fatal("restore from S3 after repair index differs from the disk")
	}
	// Instant recovery straight from the bucket.
	sp := exec.Command(binary, "--datastore", d.dir, "serve-point", "latest", "--socket", filepath.Join(t.TempDir(), "p.sock"))
	stdout, _ := sp.StdoutPipe()
	if err := sp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sp.Process.Kill(); sp.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("serve-point from S3: %v", err)
	}
	if b, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", strings.TrimSpace(line), file).CombinedOutput(); err != nil {
		t.Fatalf("serve-point from S3 differs from the restore: %v: %s", err, b)
	}
}
