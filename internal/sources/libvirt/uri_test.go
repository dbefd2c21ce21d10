package libvirt

import (
	"errors"
	"io"
	"os"
	"path/filepath"
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
		{in: "libvirt:///system?domain=vm1&drive=vdb&socket=/s", want: Options{Socket: "/s", Domain: "vm1", Disks: []string{"vdb"}}},
		{in: "libvirt:///system?domain=vm1&disk=vda&drive=vdb&socket=/s", want: Options{Socket: "/s", Domain: "vm1", Disks: []string{"vda", "vdb"}}},
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
	if err := j.check("vda", "blockwise-t-02:10", 10); err != nil {
		t.Fatal(err)
	}
	for since, want := range map[string]string{
		"blockwise-t-01:10": "not the domain's newest",
		"blockwise-t-02:20": "resized",
		"x:10":              "not one of",
		"none:10":           "shut off",
	} {
		if err := j.check("vda", since, 10); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", since, err, want)
		}
	}
	none := &job{}
	if err := none.check("vda", "blockwise-t-02:10", 10); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("no base: %v", err)
	}
}

// TestOfflineCheck: offline, a disk whose bitmap is unusable says why.
func TestOfflineCheck(t *testing.T) {
	j := &job{base: "blockwise-t-02", offline: map[string]*offlineDisk{
		"vda": {bitmap: "blockwise-t-02"}, "vdb": {why: "bitmap blockwise-t-02 is inconsistent"}}}
	if err := j.check("vda", "blockwise-t-02:10", 10); err != nil {
		t.Fatal(err)
	}
	if err := j.check("vdb", "blockwise-t-02:10", 10); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("vdb: %v", err)
	}
	if got := j.changeID("vdb"); !strings.HasPrefix(got, noCheckpoint+":") {
		t.Fatalf("change ID of a disk read whole offline: %s", got)
	}
}

// TestUsableBitmap: a qemu-img info answer's bitmap is usable only when
// present, in a qcow2, and not in use.
func TestUsableBitmap(t *testing.T) {
	info := func(format, name string, flags ...string) imageInfo {
		var i imageInfo
		i.Format = format
		i.FormatSpecific.Data.Bitmaps = append(i.FormatSpecific.Data.Bitmaps, struct {
			Name  string   `json:"name"`
			Flags []string `json:"flags"`
		}{name, flags})
		return i
	}
	for _, tc := range []struct {
		name string
		info imageInfo
		want string
	}{
		{"good", info("qcow2", "cp", "auto"), ""},
		{"in use", info("qcow2", "cp", "in-use", "auto"), "inconsistent"},
		{"missing", info("qcow2", "other"), "missing"},
		{"raw", info("raw", ""), "no persistent bitmap"},
	} {
		got := tc.info.usableBitmap("cp")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSSHURI: qemu+ssh URIs become the ssh command line virsh would run,
// and bad ones are ErrURI.
func TestSSHURI(t *testing.T) {
	o, err := ParseURI("qemu+ssh://backup@kvm1:2222/system?domain=vm1&keyfile=/k/id&known_hosts=/k/kh&socket=/run/lv.sock")
	if err != nil || o.SSH == nil {
		t.Fatalf("%+v %v", o, err)
	}
	got := strings.Join(o.SSH.args(), " ")
	want := "-T -o BatchMode=yes -o ConnectTimeout=10 -e none -p 2222 -i /k/id -o UserKnownHostsFile=/k/kh -- backup@kvm1 " + remoteCommand("/run/lv.sock")
	if got != want {
		t.Fatalf("ssh args\n got %s\nwant %s", got, want)
	}
	if o, err := ParseURI("qemu+ssh://kvm1/system?domain=vm1"); err != nil || o.SSH.Socket != DefaultSocket || o.SSH.User != "" {
		t.Fatalf("defaults: %+v %v", o.SSH, err)
	}
	for _, bad := range []string{
		"qemu+ssh:///system?domain=vm1",               // no host
		"qemu+ssh://-oProxyCommand=x/system?domain=a", // an option smuggled as host
		"qemu+ssh://h:0/system?domain=a",
		"qemu+ssh://h/session?domain=a",
		"qemu+ssh://h/system?domain=a&socket=/x'y", // would break out of the remote command's quotes
		"libvirt:///system?domain=a&keyfile=/k",    // ssh parameters on a local URI
		"libvirt://h/system?domain=a",
	} {
		if _, err := ParseURI(bad); !errors.Is(err, ErrURI) {
			t.Errorf("%s: %v, want ErrURI", bad, err)
		}
	}
}

// TestSSHDialer runs the dialer with a stand-in ssh (a script that
// records its arguments and echoes its stdin) and with one that fails.
func TestSSHDialer(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ssh")
	os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" > "+dir+"/args\nexec cat\n"), 0o755)
	c, err := sshDialer{SSH: fake, Host: "h", Socket: "/s"}.Dial()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	if a, _ := os.ReadFile(filepath.Join(dir, "args")); !strings.Contains(string(a), "-- h if command -v virt-ssh-helper") || !strings.Contains(string(a), "nc -U '/s'") {
		t.Fatalf("args %s", a)
	}
	failing := filepath.Join(dir, "ssh-fail")
	os.WriteFile(failing, []byte("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n"), 0o755)
	c, err = sshDialer{SSH: failing, Host: "h", Socket: "/s"}.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(buf); !errors.Is(err, ErrDial) || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("failing ssh: %v", err)
	}
}
