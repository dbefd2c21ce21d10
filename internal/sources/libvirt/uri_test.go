package libvirt

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
		{in: "libvirt:///system?domain=vm1", want: Options{Socket: DefaultSocket, Domain: "vm1"}},
		{in: "libvirt:///system?domain=vm1&disk=vda,vdb&socket=/s", want: Options{Socket: "/s", Domain: "vm1", Disks: []string{"vda", "vdb"}}},
		{in: "libvirt:///system", err: true},
		{in: "libvirt:///session?domain=x", err: true},
		{in: "libvirt://host/system?domain=x", err: true},
		{in: "libvirt:///system?domain=x&frob=1", err: true},
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
	f.Add("libvirt:///system?domain=a&disk=vda")
	f.Fuzz(func(t *testing.T, s string) {
		if o, err := ParseURI(s); err == nil && (o.Domain == "" || o.Socket == "") {
			t.Fatalf("%q parsed without a domain or socket", s)
		}
	})
}

func TestCheck(t *testing.T) {
	j := &job{base: "blockwise-t-02"}
	if err := j.check("blockwise-t-02:10", 10); err != nil {
		t.Fatal(err)
	}
	for since, want := range map[string]string{
		"blockwise-t-01:10": "not the domain's newest",
		"blockwise-t-02:20": "resized",
		"x:10":              "not one of",
	} {
		if err := j.check(since, 10); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", since, err, want)
		}
	}
	none := &job{}
	if err := none.check("blockwise-t-02:10", 10); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("no base: %v", err)
	}
}
