package replica

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/daemon"
)

// TestOpenAPIReplicationRoutes: the routes this package mounts are the
// /v1/replica* operations of api/openapi.json, no more, no fewer.
func TestOpenAPIReplicationRoutes(t *testing.T) {
	dir, err := os.MkdirTemp("", "bwrep") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d, err := daemon.New(daemon.Options{Datastore: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	Register(d, nil)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(wire.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var documented, served []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if strings.HasPrefix(path, "/v1/replica") && method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	for _, r := range d.API().Routes() {
		if strings.Contains(r, " /v1/replica") {
			served = append(served, r)
		}
	}
	sort.Strings(documented)
	sort.Strings(served)
	if strings.Join(documented, "\n") != strings.Join(served, "\n") {
		t.Fatalf("documented:\n%s\nserved:\n%s", strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}
}

func TestConfigValidation(t *testing.T) {
	ok := wire.CreateReplicationRequest{Name: "g", Disks: []wire.ReplicationDisk{{Source: "a"}}, Target: "https://h:1", Token: "x"}
	tests := []struct {
		name string
		edit func(*wire.CreateReplicationRequest)
		want string // "" for valid
	}{
		{"defaults", func(*wire.CreateReplicationRequest) {}, ""},
		{"rpo floor", func(r *wire.CreateReplicationRequest) { r.RPO = "15s" }, ""},
		{"rpo ceiling", func(r *wire.CreateReplicationRequest) { r.RPO = "24h" }, ""},
		{"rpo short", func(r *wire.CreateReplicationRequest) { r.RPO = "14s" }, "out of range"},
		{"rpo long", func(r *wire.CreateReplicationRequest) { r.RPO = "24h1s" }, "out of range"},
		{"rpo junk", func(r *wire.CreateReplicationRequest) { r.RPO = "soon" }, "rpo"},
		{"no disks", func(r *wire.CreateReplicationRequest) { r.Disks = nil }, "no disks"},
		{"disk twice", func(r *wire.CreateReplicationRequest) { r.Disks = append(r.Disks, r.Disks[0]) }, "twice"},
		{"http target", func(r *wire.CreateReplicationRequest) { r.Target = "http://h:1" }, "https://"},
		{"no token", func(r *wire.CreateReplicationRequest) { r.Token = "" }, "token"},
		{"unix no token", func(r *wire.CreateReplicationRequest) { r.Target, r.Token = "unix:///x/api.sock", "" }, ""},
		{"keep", func(r *wire.CreateReplicationRequest) { r.Keep = -1 }, "keep"},
		{"keep-within", func(r *wire.CreateReplicationRequest) { r.KeepWithin = "-1h" }, "keep-within"},
		{"compression", func(r *wire.CreateReplicationRequest) { r.Compression = "lz4" }, "compression"},
		{"bwlimit", func(r *wire.CreateReplicationRequest) { r.BandwidthLimit = -1 }, "bandwidth"},
	}
	for _, tt := range tests {
		r := ok
		r.Disks = append([]wire.ReplicationDisk(nil), ok.Disks...)
		tt.edit(&r)
		c, err := configFrom(r)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want == "" && (c.Keep != DefaultKeep && r.Keep == 0 || c.Disks[0].Target != c.Disks[0].Source):
			t.Errorf("%s: defaults not applied: %+v", tt.name, c)
		case tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want ErrInvalid about %q", tt.name, err, tt.want)
		}
	}
}

func TestThin(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var pts []wire.ReplicationPoint
	for i := range 300 { // a point every minute for five hours
		pts = append(pts, wire.ReplicationPoint{Seq: uint64(i + 1), Time: now.Add(-time.Duration(299-i) * time.Minute)})
	}
	keep := thin(pts, 24, 0, now)
	if len(keep) != 24 || !keep[300] || !keep[277] || keep[276] {
		t.Fatalf("keep 24: %v", keep)
	}
	keep = thin(pts, 3, time.Hour, now)
	var older int
	for s := range keep {
		if now.Sub(pts[s-1].Time) > time.Hour {
			older++
		}
	}
	if len(keep) != 61+older || older != 3 || !keep[300] {
		t.Fatalf("keep-within 1h then 3 hourly: %d kept, %d older", len(keep), older)
	}
	if k := thin(pts[:1], 1, 0, now); !k[1] {
		t.Fatal("the latest point is always kept")
	}
}

func TestUnionClip(t *testing.T) {
	a := []wire.Area{{Start: 0, Length: 10}, {Start: 20, Length: 10}}
	b := []wire.Area{{Start: 5, Length: 10}, {Start: 40, Length: 5}}
	got := union(a, b)
	want := []wire.Area{{Start: 0, Length: 15}, {Start: 20, Length: 10}, {Start: 40, Length: 5}}
	if len(got) != len(want) {
		t.Fatalf("union: %v", got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("union: %v", got)
		}
	}
	c := clip(want, 22)
	if len(c) != 2 || c[0] != (wire.Area{Start: 22, Length: 8}) {
		t.Fatalf("clip: %v", c)
	}
}

func TestFrames(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 1024)
	body := appendFrame(nil, frameData, 512, data, 1024)
	body = appendFrame(body, frameZero, 4096, nil, 512)
	fr := newFrameReader(bytes.NewReader(body), 8192, 0, 8192)
	f, err := fr.next()
	if err != nil || f.kind != frameData || f.off != 512 || !bytes.Equal(f.data, data) {
		t.Fatalf("data frame: %+v %v", f, err)
	}
	if f, err = fr.next(); err != nil || f.kind != frameZero || f.off != 4096 || f.length != 512 {
		t.Fatalf("zero frame: %+v %v", f, err)
	}
	if _, err = fr.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	bad := []struct {
		name string
		body []byte
		size int64
	}{
		{"kind", appendFrame(nil, 9, 0, nil, 512), 8192},
		{"unaligned", appendFrame(nil, frameZero, 100, nil, 512), 8192},
		{"past the end", appendFrame(nil, frameZero, 8192, nil, 512), 8192},
		{"backwards", appendFrame(appendFrame(nil, frameZero, 1024, nil, 512), frameZero, 0, nil, 512), 8192},
		{"truncated", appendFrame(nil, frameData, 0, data, 1024)[:100], 8192},
		{"zero length", appendFrame(nil, frameZero, 0, nil, 0), 8192},
	}
	for _, b := range bad {
		fr := newFrameReader(bytes.NewReader(b.body), b.size, 0, b.size)
		var err error
		for err == nil {
			_, err = fr.next()
		}
		if !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v", b.name, err)
		}
	}
}

// FuzzFrames: outside bytes never crash the parser, and every frame it
// returns lies inside the batch and the disk, after the previous one.
func FuzzFrames(f *testing.F) {
	f.Add(appendFrame(nil, frameData, 512, make([]byte, 512), 512), int64(0), int64(4096))
	f.Add(appendFrame(nil, frameZero, 0, nil, 4096), int64(0), int64(4096))
	f.Fuzz(func(t *testing.T, body []byte, from, to int64) {
		const size = 1 << 20
		fr := newFrameReader(bytes.NewReader(body), size, from, to)
		prev := from
		for {
			fm, err := fr.next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrBadFrame) {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if fm.off < prev || fm.off+fm.length > to || fm.off+fm.length > size || fm.length <= 0 ||
				(fm.kind == frameData && int64(len(fm.data)) != fm.length) {
				t.Fatalf("frame outside its batch: %+v (from %d to %d)", fm, from, to)
			}
			prev = fm.off + fm.length
		}
	})
}

func TestReaderChecksums(t *testing.T) {
	data := make([]byte, 256<<10)
	data[70000] = 1
	sums, err := readerChecksums(bytes.NewReader(data), int64(len(data)), wire.ChecksumsRequest{Offset: 0, Length: int64(len(data)), BlockSize: 64 << 10})
	if err != nil || len(sums) != 4 || sums[0] != sums[2] || sums[0] == sums[1] {
		t.Fatalf("sums: %v %v", sums, err)
	}
	for _, r := range []wire.ChecksumsRequest{{Length: 1 << 30, BlockSize: 4096}, {Length: 4096, BlockSize: 0}, {Offset: -1, Length: 4096, BlockSize: 4096}} {
		if _, err := readerChecksums(bytes.NewReader(data), int64(len(data)), r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", r, err)
		}
	}
}
