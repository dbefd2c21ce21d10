package backup

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/repo"
)

// TestPickLatest is the one definition of "latest": the newest time,
// equal times broken by the greater ID whatever the order of the heads,
// only among the heads the filter keeps.
func TestPickLatest(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	head := func(id byte, d, uuid string, at time.Time) repo.Head {
		return repo.Head{ID: repo.ID{id}, Meta: repo.Meta{Disk: d, DiskUUID: uuid, Time: at}}
	}
	a := head(0x10, "vm", "u1", t0)
	b := head(0x20, "vm", "u1", t0.Add(time.Second))
	c := head(0x30, "vm", "u1", t0.Add(time.Second)) // ties b: greater ID
	d := head(0x40, "vm", "u2", t0.Add(time.Hour))   // the same name, a new disk
	e := head(0x50, "db", "u3", t0.Add(2*time.Hour))
	byUUID := func(d, u string) func(repo.Meta) bool {
		return func(m repo.Meta) bool { return m.Disk == d && m.DiskUUID == u }
	}
	byName := func(d string) func(repo.Meta) bool {
		return func(m repo.Meta) bool { return d == "" || m.Disk == d }
	}
	for _, tc := range []struct {
		name  string
		heads []repo.Head
		keep  func(repo.Meta) bool
		want  *repo.Head
	}{
		{"none", nil, byName(""), nil},
		{"one", []repo.Head{a}, byName("vm"), &a},
		{"newest time", []repo.Head{b, a}, byName("vm"), &b},
		{"tie: greater ID", []repo.Head{b, c}, byName("vm"), &c},
		{"tie in the other order", []repo.Head{c, b}, byName("vm"), &c},
		{"uuid: the old disk", []repo.Head{a, d, b, c}, byUUID("vm", "u1"), &c},
		{"uuid: the new disk", []repo.Head{a, d, b, c}, byUUID("vm", "u2"), &d},
		{"uuid: none", []repo.Head{a, d}, byUUID("vm", "u9"), nil},
		{"name: any identity", []repo.Head{a, d, c, e}, byName("vm"), &d},
		{"any disk", []repo.Head{a, d, c, e}, byName(""), &e},
		{"other disk only", []repo.Head{e}, byName("vm"), nil},
	} {
		got := pickLatest(tc.heads, tc.keep)
		if (got == nil) != (tc.want == nil) || got != nil && got.ID != tc.want.ID {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFindPoint resolves "latest" and ID prefixes in a real repository,
// per disk and over all, with typed errors for none and several.
func TestFindPoint(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, name := range []string{"vm", "db"} {
		d, err := f.th.h.Create(name, 1<<20, disk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	}
	vm1 := f.backup(t, "vm").Manifest
	db1 := f.backup(t, "db").Manifest
	vm2 := f.backup(t, "vm").Manifest
	for _, tc := range []struct {
		ref, disk string
		want      *repo.Manifest
		err       error
	}{
		{"latest", "", vm2, nil},
		{"latest", "vm", vm2, nil},
		{"latest", "db", db1, nil},
		{"latest", "nope", nil, repo.ErrNotFound},
		{vm1.ID.String()[:12], "", vm1, nil},
		{vm1.ID.String(), "vm", vm1, nil},
		{vm1.ID.String()[:12], "db", nil, repo.ErrNotFound},
		{"", "vm", nil, ErrAmbiguousPoint},
		{"", "db", db1, nil}, // the one point of db
		{"zz", "", nil, repo.ErrNotFound},
	} {
		m, err := FindPoint(ctx, f.repo, tc.ref, tc.disk)
		if !errors.Is(err, tc.err) || (m == nil) != (tc.want == nil) || m != nil && m.ID != tc.want.ID {
			t.Errorf("FindPoint(%q, %q): %v %v, want %v %v", tc.ref, tc.disk, m, err, tc.want, tc.err)
		}
	}
}
