package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/testcert"
)

// TestCopyAPI: the data mover through the API copies an extent of a
// snapshot and of a live disk; bad requests (out of range, misaligned,
// oversized, to a snapshot, from another datastore, with a wrong token)
// get their problem types and client sentinels and change nothing; the
// host advertises its maximum segment.
func TestCopyAPI(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	c := e.Client
	for _, n := range []string{"src", "dst"} {
		if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: n, Size: 4 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	src, _ := e.Host.Disk("src")
	dst, _ := e.Host.Disk("dst")
	data := bytes.Repeat([]byte("blockwise"), 1<<17)[:1<<20]
	if _, err := src.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "src", "s1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteAt(make([]byte, 1<<20), 0); err != nil { // the snapshot keeps data
		t.Fatal(err)
	}
	info, err := c.Host(ctx)
	if err != nil || info.Offload == nil || info.Offload.MaxCopySegment != disk.MaxCopySegment || info.Offload.UnmapGranularity != disk.DefaultGrain {
		t.Fatalf("host info %+v: %v", info, err)
	}
	res, err := c.CopyExtent(ctx, "dst", client.CopyRequest{Source: client.CopySource{Disk: "src", Snapshot: "s1"}, Offset: 1 << 20, Length: 1 << 20})
	if err != nil || res.Length != 1<<20 || res.Stats.Reflinked+res.Stats.Copied+res.Stats.Written != 1<<20 {
		t.Fatalf("copy: %+v %v", res, err)
	}
	got := make([]byte, 1<<20)
	dst.ReadAt(got, 1<<20)
	if !bytes.Equal(got, data) {
		t.Fatal("copied extent differs from the snapshot's")
	}
	want := make([]byte, 4<<20)
	dst.ReadAt(want, 0)

	foreign := apitest.Start(t).Host.Datastore().ID()
	seg := info.Offload.MaxCopySegment
	cases := []struct {
		name string
		dst  string
		req  client.CopyRequest
		want error
	}{
		{"another datastore", "dst", client.CopyRequest{Source: client.CopySource{Datastore: foreign, Disk: "src"}, Length: 4096}, client.ErrNotSupported},
		{"out of range", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src", Offset: 4<<20 - 4096}, Length: 8192}, client.ErrOutOfRange},
		{"target out of range", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src"}, Offset: 4 << 20, Length: 512}, client.ErrOutOfRange},
		{"negative", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src"}, Offset: -512, Length: 512}, client.ErrOutOfRange},
		{"misaligned", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src", Offset: 100}, Length: 512}, client.ErrInvalidRequest},
		{"oversized", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src"}, Length: seg + 512}, client.ErrTooLarge},
		{"to a snapshot", "src@s1", client.CopyRequest{Source: client.CopySource{Disk: "dst"}, Length: 4096}, client.ErrReadOnly},
		{"unknown source", "dst", client.CopyRequest{Source: client.CopySource{Disk: "nope"}, Length: 4096}, client.ErrNotFound},
		{"unknown snapshot", "dst", client.CopyRequest{Source: client.CopySource{Disk: "src", Snapshot: "nope"}, Length: 4096}, client.ErrSnapshotNotFound},
	}
	for _, tc := range cases {
		if _, err := c.CopyExtent(ctx, tc.dst, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A wrong token over TCP is refused before anything moves.
	pki := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}})
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	if _, _, err := api.OpenTokens(e.Dir).Create("x"); err != nil {
		t.Fatal(err)
	}
	bad, err := client.New("https://"+l.Addr().String(), client.Options{Token: "bw_wrong", TLSConfig: &tls.Config{RootCAs: pki.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.CopyExtent(ctx, "dst", client.CopyRequest{Source: client.CopySource{Disk: "src", Snapshot: "s1"}, Length: 1 << 20}); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
	now := make([]byte, 4<<20)
	dst.ReadAt(now, 0)
	if !bytes.Equal(now, want) {
		t.Fatal("a refused copy changed the target")
	}
}

// TestCloneAPI: linked and full clones through the API get new UUIDs,
// read as their source snapshot, and a linked clone without a snapshot
// is a bad request.
func TestCloneAPI(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	c := e.Client
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "src", Size: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	src, _ := e.Host.Disk("src")
	data := bytes.Repeat([]byte{0xab}, 1<<20)
	src.WriteAt(data, 4096)
	if _, err := c.CreateSnapshot(ctx, "src", "s1", ""); err != nil {
		t.Fatal(err)
	}
	src.WriteAt(make([]byte, 1<<20), 4096)
	orig, _ := c.Disk(ctx, "src")
	for _, linked := range []bool{true, false} {
		name := map[bool]string{true: "linked", false: "full"}[linked]
		res, err := c.CloneDisk(ctx, "src", client.CloneRequest{Name: name, Snapshot: "s1", Linked: linked})
		if err != nil {
			t.Fatal(err)
		}
		if res.Disk.UUID == orig.UUID || res.Disk.ChangeID == orig.ChangeID || res.Disk.Size != 2<<20 {
			t.Fatalf("%s clone: %+v", name, res.Disk)
		}
		if linked && res.Disk.Shared == 0 {
			t.Fatalf("linked clone shares nothing: %+v", res.Disk)
		}
		d, _ := e.Host.Disk(name)
		got := make([]byte, 1<<20)
		d.ReadAt(got, 4096)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s clone does not read as the snapshot", name)
		}
	}
	if _, err := c.CloneDisk(ctx, "src", client.CloneRequest{Name: "x", Linked: true}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("linked clone without a snapshot: %v", err)
	}
	if _, err := c.CloneDisk(ctx, "src", client.CloneRequest{Name: "full"}); !errors.Is(err, client.ErrExists) {
		t.Fatalf("clone onto an existing disk: %v", err)
	}
	// Without a snapshot a full clone copies a temporary one, then drops it.
	if _, err := c.CloneDisk(ctx, "src", client.CloneRequest{Name: "live"}); err != nil {
		t.Fatal(err)
	}
	if snaps, _ := c.ListSnapshots(ctx, "src"); len(snaps) != 1 {
		t.Fatalf("temporary snapshot left behind: %+v", snaps)
	}
}

// TestCloneJob: a clone asked as a job answers 202 with its task at
// once; the job (kind clone) ends succeeded with the CloneResult as its
// summary, and the clone holds the snapshot's bytes; a missing snapshot
// is refused before any job starts.
func TestCloneJob(t *testing.T) {
	e := apitest.Start(t)
	ctx := context.Background()
	c := e.Client
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "src", Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	src, _ := e.Host.Disk("src")
	data := bytes.Repeat([]byte("clone job"), 1<<17)[:1<<20]
	src.WriteAt(data, 1<<20)
	if _, err := c.CreateSnapshot(ctx, "src", "s1", ""); err != nil {
		t.Fatal(err)
	}
	src.WriteAt(make([]byte, 1<<20), 1<<20) // the clone is of the snapshot
	for _, tc := range []struct {
		name   string
		linked bool
	}{{"full", false}, {"linked", true}} {
		task, err := c.CloneDiskJob(ctx, "src", client.CloneRequest{Name: tc.name, Snapshot: "s1", Linked: tc.linked})
		if err != nil || task.Job == "" || task.Kind != "clone" {
			t.Fatalf("%s: %+v %v", tc.name, task, err)
		}
		j := waitJob(t, c, task.Job)
		var res client.CloneResult
		if j.State != wire.JobSucceeded || j.Kind != "clone" || json.Unmarshal(j.Summary, &res) != nil || res.Disk.Name != tc.name {
			t.Fatalf("%s: job %+v", tc.name, j)
		}
		d, err := e.Host.Disk(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1<<20)
		d.ReadAt(got, 1<<20)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s clone differs from the snapshot", tc.name)
		}
	}
	_, err := c.CloneDiskJob(ctx, "src", client.CloneRequest{Name: "x", Snapshot: "nope"})
	if !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("clone job of a missing snapshot: %v", err)
	}
	if _, err := e.Host.Disk("x"); err == nil {
		t.Fatal("a refused clone job made a disk")
	}
}

// waitJob waits for a job's end.
func waitJob(t *testing.T, c *client.Client, id string) *client.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Done() {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s: %+v", id, j)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
