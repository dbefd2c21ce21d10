package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	"github.com/blockwise/blockwise/internal/nbd"
)

// startS3CLI starts a real S3 server with a bucket "backups", points
// BLOCKWISE_REPO at backups/cli in it, and starts a daemon.
func startS3CLI(t *testing.T) (*s3test.Server, *serveProc) {
	t.Helper()
	srv, err := s3test.Start("")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(srv.Stop)
	if err := srv.MakeBucket(context.Background(), "backups"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	t.Setenv("BLOCKWISE_PASSWORD", "s3 cli test")
	t.Setenv("BLOCKWISE_REPO", srv.URL("backups", "cli"))
	return srv, startServe(t)
}

// The CLI end to end against a real S3 server: backup, incremental,
// restore bit-identical, check --read-data.
func TestCLIWithS3Repository(t *testing.T) {
	srv, d := startS3CLI(t)
	ctx := context.Background()
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
	sp := cliCommand(d.dir, nil, "serve-point", "latest", "--socket", filepath.Join(t.TempDir(), "p.sock"))
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

// The cache of a remote repository: commands keep copies of the index
// files and restore points, named as the bucket's objects, and read them
// instead of the bucket; check reads the bucket itself, so it reports an
// index object damaged there while a cached command still works from its
// good copy; --no-cache reads the bucket too.
func TestCLIS3Cache(t *testing.T) {
	srv, d := startS3CLI(t)
	ctx := context.Background()
	cache := t.TempDir()
	t.Setenv("BLOCKWISE_CACHE_DIR", cache)
	d.must(t, "disk", "create", "vm", "--size", "8M")
	c, err := nbd.Dial(ctx, "nbd+unix:///vm?socket="+filepath.Join(d.dir, "nbd.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteAt(ctx, bytes.Repeat([]byte{7}, 1<<20), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	d.must(t, "repo", "init")
	d.must(t, "backup", "vm")
	mc, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	objects := func(typ string) []string {
		var names []string
		for o := range mc.ListObjects(ctx, "backups", minio.ListObjectsOptions{Prefix: "cli/" + typ + "/", Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			names = append(names, filepath.Base(o.Key))
		}
		slices.Sort(names)
		return names
	}
	copies := func(typ string) []string {
		paths, _ := filepath.Glob(filepath.Join(cache, "remote", "*", typ, "*"))
		var names []string
		for _, p := range paths {
			names = append(names, filepath.Base(p))
		}
		slices.Sort(names)
		return names
	}
	for _, typ := range []string{"index", "manifests"} {
		if got, want := copies(typ), objects(typ); len(want) == 0 || !slices.Equal(got, want) {
			t.Fatalf("cached %s %v, bucket %v", typ, got, want)
		}
	}
	bad := objects("index")[0]
	if _, err := mc.PutObject(ctx, "backups", "cli/index/"+bad, strings.NewReader("damaged"), 7, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	d.must(t, "points")
	if out, code := d.run(t, "check"); code != exitCheckFailed || !strings.Contains(out, bad) {
		t.Fatalf("check over a damaged index object: exit %d: %s", code, out)
	}
	if out, code := d.run(t, "points", "--no-cache"); code != exitCorrupt {
		t.Fatalf("snapshots --no-cache over a damaged index object: exit %d: %s", code, out)
	}
	d.must(t, "repair", "index")
	d.must(t, "check")
	d.must(t, "points")
	if got, want := copies("index"), objects("index"); !slices.Equal(got, want) {
		t.Fatalf("after repair: cached index %v, bucket %v", got, want)
	}
}
