package nbd

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
		bad  bool
	}{
		{in: "nbd://example.com/disk", want: URI{"tcp", "example.com:10809", "example.com", "disk", false}},
		{in: "nbd://127.0.0.1:1234/", want: URI{"tcp", "127.0.0.1:1234", "127.0.0.1", "", false}},
		{in: "nbd://[::1]:99/a%20b", want: URI{"tcp", "[::1]:99", "::1", "a b", false}},
		{in: "nbds://h/x/y", want: URI{"tcp", "h:10809", "h", "x/y", true}},
		{in: "nbd+unix:///e?socket=/run/s.sock", want: URI{"unix", "/run/s.sock", "", "e", false}},
		{in: "nbds+unix:///?socket=s", want: URI{"unix", "s", "", "", true}},
		{in: "nbd+unix:///e", bad: true},
		{in: "nbd+unix://host/e?socket=s", bad: true},
		{in: "nbd:///e", bad: true},
		{in: "http://h/e", bad: true},
		{in: "nbd://h:port/e", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("%s: accepted as %+v", tt.in, got)
			}
			continue
		}
		if err != nil || *got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestZeroRuns(t *testing.T) {
	buf := func(n int, data ...int) []byte {
		b := make([]byte, n)
		for _, i := range data {
			b[i] = 1
		}
		return b
	}
	tests := []struct {
		name   string
		b      []byte
		off    uint64
		single bool
		want   []run
	}{
		{"all zero", buf(8192), 0, false, []run{{0, 8192, true}}},
		{"all data", buf(100, 5), 0, false, []run{{0, 100, false}}},
		{"data hole data", buf(12288, 0, 12287), 0, false, []run{{0, 4096, false}, {4096, 8192, true}, {8192, 12288, false}}},
		{"unaligned start", buf(8192, 0), 2048, false, []run{{0, 2048, false}, {2048, 8192, true}}},
		{"single", buf(12288, 0), 0, true, []run{{0, 12288, false}}},
		{"empty", nil, 0, false, nil},
	}
	for _, tt := range tests {
		if got := zeroRuns(tt.b, tt.off, tt.single); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNormalizeExtents(t *testing.T) {
	tests := []struct {
		name   string
		in     []Extent
		length uint64
		reqOne bool
		want   []Extent
	}{
		{"merge", []Extent{{10, 1}, {10, 1}, {5, 0}}, 25, false, []Extent{{20, 1}, {5, 0}}},
		{"clamp", []Extent{{10, 1}, {100, 0}}, 50, false, []Extent{{10, 1}, {40, 0}}},
		{"req one merges", []Extent{{10, 1}, {10, 1}, {5, 0}}, 25, true, []Extent{{20, 1}}},
		{"skip empty", []Extent{{0, 3}, {10, 1}}, 10, false, []Extent{{10, 1}}},
		{"empty answer", nil, 7, false, []Extent{{7, 0}}},
		{"huge backend extent", []Extent{{1 << 40, 2}}, 1 << 31, true, []Extent{{1 << 31, 2}}},
	}
	for _, tt := range tests {
		if got := normalizeExtents(tt.in, tt.length, tt.reqOne); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	many := make([]Extent, maxExtentsPerChunk+10)
	for i := range many {
		many[i] = Extent{1, uint32(i % 2)}
	}
	if n := len(normalizeExtents(many, 1<<30, false)); n != maxExtentsPerChunk {
		t.Errorf("extent cap: %d", n)
	}
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		err      error
		code     uint32
		sentinel error
	}{
		{ErrReadOnly, EPERM, ErrReadOnly},
		{fmt.Errorf("x: %w", ErrOutOfRange), EINVAL, ErrOutOfRange},
		{ErrMisaligned, EINVAL, ErrMisaligned},
		{ErrNotSupported, ENOTSUP, ErrNotSupported},
		{fmt.Errorf("y: %w", ErrNoSpace), ENOSPC, ErrNoSpace},
		// A backend's full file system: ENOSPC on the wire, not EIO.
		{&os.PathError{Op: "write", Path: "flat.raw", Err: syscall.ENOSPC}, ENOSPC, ErrNoSpace},
		{fmt.Errorf("quota: %w", syscall.EDQUOT), ENOSPC, ErrNoSpace},
		{errors.New("other"), EIO, nil},
		{&Error{Code: ESHUTDOWN}, ESHUTDOWN, nil},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.code {
			t.Errorf("ErrorCode(%v) = %d, want %d", tt.err, got, tt.code)
		}
		if tt.sentinel != nil && !errors.Is(&Error{Code: tt.code}, tt.sentinel) {
			t.Errorf("wire code %d does not match %v", tt.code, tt.sentinel)
		}
	}
	if ErrorCode(nil) != 0 || errors.Is(&Error{Code: EIO}, ErrReadOnly) {
		t.Error("nil or EIO mapping")
	}
}
