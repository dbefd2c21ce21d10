package sources

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/quiesce"
	"github.com/blockwise/blockwise/internal/sources/libvirt"
	"github.com/blockwise/blockwise/internal/sources/qemu"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{"qemu+unix:///run/vm1/qmp.sock?drive=a,b&agent=/g.sock", nil},
		{"libvirt:///system?domain=vm1&disk=vda", nil},
		{"qemu+ssh://backup@kvm1:2222/system?domain=vm1&keyfile=/root/.ssh/id", nil},
		{"qemu+unix:///q.sock?frob=1", qemu.ErrURI},
		{"libvirt:///system", libvirt.ErrURI},
		{"qemu+ssh://backup:hunter2@kvm1/system?domain=vm1", ErrPassword},
		{"qemu+unix://u:hunter2@/q.sock", ErrPassword},
		{"libvirt://u:hunter2@/system?domain=vm1", ErrPassword},
		{"vm1", qemu.ErrURI},
	} {
		err := Check(tc.uri)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.uri, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", tc.uri, err)
		}
	}
}

// TestRedactErrors: whatever a parser says of a URI with a password, the
// password does not show, and errors.Is still sees the sentinel.
func TestRedactErrors(t *testing.T) {
	for _, uri := range []string{
		"qemu+ssh://u:hunter2@kvm1/system?domain=vm1&frob=1", // unknown parameter
		"qemu+ssh://u:hunter2@kvm1:99999/system?domain=vm1",  // bad port: url.Parse fails
	} {
		_, err := libvirt.ParseURI(uri)
		if err == nil {
			t.Fatalf("%s parsed", uri)
		}
		r := redacted(uri, err)
		if strings.Contains(r.Error(), "hunter2") || !errors.Is(r, libvirt.ErrURI) {
			t.Errorf("%s: %v", uri, r)
		}
		if got := Redact(uri); strings.Contains(got, "hunter2") {
			t.Errorf("Redact(%s) = %s", uri, got)
		}
	}
	if got := Redact("qemu+unix:///q.sock?agent=/a"); got != "qemu+unix:///q.sock?agent=/a" {
		t.Errorf("a URI without a password changed: %s", got)
	}
}

func TestSplit(t *testing.T) {
	disks, uris, err := Split([]string{"vm1", "qemu+unix:///q.sock", "web-*", "libvirt:///system?domain=d"})
	if err != nil || !reflect.DeepEqual(disks, []string{"vm1", "web-*"}) || !reflect.DeepEqual(uris, []string{"qemu+unix:///q.sock", "libvirt:///system?domain=d"}) {
		t.Fatalf("%v %v %v", disks, uris, err)
	}
	if _, _, err := Split([]string{"vm1", "qemu+unix://h/q.sock"}); !errors.Is(err, qemu.ErrURI) {
		t.Fatalf("bad URI: %v", err)
	}
}

func TestHostQuiesce(t *testing.T) {
	if q, err := HostQuiesce(Options{Quiesce: "require"}, ""); q != nil || err != nil {
		t.Fatalf("no agent: %v %v", q, err)
	}
	q, err := HostQuiesce(Options{Quiesce: "require", PreFreeze: "true"}, "/run/qga.sock")
	if err != nil || q.Policy != quiesce.Require || q.PreFreeze != "true" || q.Connect == nil {
		t.Fatalf("%+v %v", q, err)
	}
	if _, err := HostQuiesce(Options{Quiesce: "sometimes"}, "/a"); !errors.Is(err, quiesce.ErrPolicy) {
		t.Fatalf("bad policy: %v", err)
	}
}

// FuzzCheck: no URI that Check accepts carries a password, and Redact
// never returns a password it was given.
func FuzzCheck(f *testing.F) {
	f.Add("qemu+ssh://u:pw@h/system?domain=d")
	f.Add("qemu+unix:///q.sock?drive=a")
	f.Add("libvirt:///system?domain=d&socket=/s")
	f.Fuzz(func(t *testing.T, s string) {
		if Check(s) == nil && strings.Contains(s, "@") {
			if r := Redact(s); r != s {
				t.Fatalf("%q accepted with a password", s)
			}
		}
	})
}
