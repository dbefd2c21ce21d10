package qemu

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Options
		err  bool
	}{
		{in: "qemu+unix:///run/vm1/qmp.sock", want: Options{Socket: "/run/vm1/qmp.sock"}},
		{in: "qemu+unix:///q.sock?drive=a,b&agent=/g.sock&name=vm", want: Options{Socket: "/q.sock", Drives: []string{"a", "b"}, AgentSocket: "/g.sock", Name: "vm"}},
		{in: "qemu+unix://host/q.sock", err: true},
		{in: "qemu+unix:///q.sock?frob=1", err: true},
		{in: "qemu+tcp:///q.sock", err: true},
		{in: "qemu+unix://", err: true},
	} {
		got, err := ParseURI(tc.in)
		if tc.err {
			if !errors.Is(err, ErrURI) {
				t.Errorf("%s: want ErrURI, got %v", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, %v", tc.in, got, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("qemu+unix:///q.sock?drive=a&agent=/x")
	f.Add("qemu+unix:///%zz")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseURI(s)
		if err == nil && o.Socket == "" {
			t.Fatalf("%q parsed without a socket", s)
		}
	})
}

// TestChain covers the chain check's answers without QEMU (the real
// breaks are in cmd/blockwise's TestQEMUSource).
func TestChain(t *testing.T) {
	owned := map[string]bitmapInfo{
		"blockwise-t-01": {Name: "blockwise-t-01"},
		"blockwise-t-02": {Name: "blockwise-t-02", Recording: true},
	}
	v := &view{size: 100, owned: owned}
	if names, err := v.chain("blockwise-t-01:100"); err != nil || !reflect.DeepEqual(names, []string{"blockwise-t-01", "blockwise-t-02"}) {
		t.Fatalf("chain: %v %v", names, err)
	}
	for since, why := range map[string]string{
		"blockwise-t-01:200": "resized",
		"blockwise-t-00:100": "missing",
		"other:100":          "not one of",
		"blockwise-t-01":     "not one of",
	} {
		if _, err := v.chain(since); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: want %q, got %v", since, why, err)
		}
	}
	stopped := &view{size: 100, owned: map[string]bitmapInfo{"blockwise-t-01": {Name: "blockwise-t-01"}}}
	if _, err := stopped.chain("blockwise-t-01:100"); err == nil || !strings.Contains(err.Error(), "not recording") {
		t.Errorf("not recording: %v", err)
	}
	broken := &view{size: 100, owned: map[string]bitmapInfo{}, broken: []string{"blockwise-t-01"}}
	if _, err := broken.chain("blockwise-t-01:100"); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Errorf("inconsistent: %v", err)
	}
}

// TestQdevID: a -device id (libvirt's disk alias) names a drive too.
func TestQdevID(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/machine/peripheral/virtio-disk0/virtio-backend", "virtio-disk0"},
		{"/machine/peripheral/scsi0-0-0-0", "scsi0-0-0-0"},
		{"/machine/peripheral-anon/device[0]/virtio-backend", ""},
		{"", ""},
	} {
		if got := qdevID(tc.path); got != tc.want {
			t.Errorf("qdevID(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
