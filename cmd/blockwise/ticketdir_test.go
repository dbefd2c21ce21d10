package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/client"
)

// writeTicketDir never writes the private key through a file that was
// there before: a symbolic link planted at client-key.pem (or a file
// someone else owns) must be replaced, not written through.
func TestWriteTicketDirReplacesPlantedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "stolen")
	if err := os.WriteFile(elsewhere, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "client-key.pem")); err != nil {
		t.Fatal(err)
	}
	tk := &client.Ticket{CACert: "ca\n", ClientCert: "cert\n", ClientKey: "SECRET KEY\n"}
	if err := writeTicketDir(dir, tk); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(elsewhere); err != nil || len(data) != 0 {
		t.Fatalf("the key went through the planted link into %s: %q %v", elsewhere, data, err)
	}
	for name, want := range map[string]string{"ca-cert.pem": "ca\n", "client-cert.pem": "cert\n", "client-key.pem": "SECRET KEY\n"} {
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want a regular 0600 file", name, fi.Mode(), err)
		}
		if data, _ := os.ReadFile(p); string(data) != want {
			t.Fatalf("%s: %q, want %q", name, data, want)
		}
	}
}

// ticket create --ttl outside 1s..720h is a usage error, refused before
// the host is asked: the API counts whole seconds and reads 0 as its
// default, so --ttl 500ms (or -500ms) used to give a 24-hour ticket.
func TestTicketCreateTTL(t *testing.T) {
	c := &cli{dir: t.TempDir()}
	for _, ttl := range []string{"500ms", "-500ms", "-1h", "721h"} {
		if out, code := c.run(t, "ticket", "create", "vm", "--ttl", ttl); code != exitUsage || !strings.Contains(out, "--ttl") {
			t.Fatalf("--ttl %s: exit %d: %s", ttl, code, out)
		}
	}
}
