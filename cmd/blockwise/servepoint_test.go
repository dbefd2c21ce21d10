package main

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/blockwise/blockwise/internal/testcert"
)

// servePoint starts `blockwise serve-point` and returns the URIs it
// prints (unix, then TCP with --listen) and the running command, killed at
// cleanup if still running.
func (e *e2e) servePoint(t *testing.T, args ...string) ([]string, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := e.command(nil, append([]string{"serve-point"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	want := 1
	if slices.Contains(args, "--listen") {
		want = 2
	}
	var uris []string
	rd := bufio.NewReader(stdout)
	for len(uris) < want {
		line, err := rd.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "nbd") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("serve-point printed %q (%v): %s", line, err, stderr.String())
		}
		uris = append(uris, strings.TrimSpace(line))
	}
	return uris, cmd, &stderr
}

// TestE2EServePointListenNeedsAuth: --listen without client certificates
// is refused (exit 2) unless --listen-insecure-no-auth says so, and then
// a plain client reads the point.
func TestE2EServePointListenNeedsAuth(t *testing.T) {
	needTools(t, "nbdinfo")
	e := newE2E(t, true)
	dir := t.TempDir()
	id := e.vmPoint(t, 4<<20, 4, 12, filepath.Join(dir, "ref.raw")).ID
	pki := testcert.New(t)
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:0"},
		{"--listen", "127.0.0.1:0", "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-required"},
		{"--listen", "127.0.0.1:0", "--tls-client-ca", pki.CACert},
		{"--tls-client-ca", pki.CACert},
		{"--listen", "127.0.0.1:0", "--listen-insecure-no-auth", "--tls-client-ca", pki.CACert},
	} {
		if out, code := e.run(t, append([]string{"serve-point", id, "--socket", filepath.Join(dir, "p.sock")}, args...)...); code != exitUsage {
			t.Fatalf("serve-point %v: exit %d, want %d: %s", args, code, exitUsage, out)
		}
	}
	uris, cmd, stderr := e.servePoint(t, id, "--socket", filepath.Join(dir, "p.sock"), "--listen", "127.0.0.1:0", "--listen-insecure-no-auth")
	if b, err := exec.Command("nbdinfo", "--size", uris[1]).CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "4194304" {
		t.Fatalf("plain TCP with --listen-insecure-no-auth: %v: %s", err, b)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve-point after SIGTERM: %v: %s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "listen-insecure-no-auth") {
		t.Fatalf("no warning logged: %s", stderr)
	}
}

// dataBytes sums the data extents of `nbdinfo --map`.
func dataBytes(t *testing.T, uri string) int64 {
	t.Helper()
	out, err := exec.Command("nbdinfo", "--map", uri).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --map: %v: %s", err, out)
	}
	var n int64
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == "0" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			n += v
		}
	}
	return n
}

// nonZeroBlocks counts the chunk-sized blocks of a file holding data.
func nonZeroBlocks(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for off := 0; off < len(b); off += e2eBlock {
		if !allZero(b[off:min(off+e2eBlock, len(b))]) {
			n++
		}
	}
	return n
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestE2EServePoint serves restore points read-only over NBD straight
// from the repository: qemu-img compare, nbdcopy and nbdinfo --map see
// each point as it was backed up (holes where its chunks are zero),
// writes are refused, SIGTERM stops the server cleanly, and a damaged
// chunk fails the read and is logged with its offset.
func TestE2EServePoint(t *testing.T) {
	needTools(t, "nbdinfo", "nbdcopy", "qemu-io")
	e := newE2E(t, true)
	rng := rand.New(rand.NewPCG(seed(t), 11))
	dir := t.TempDir()
	e.must(t, "disk", "create", "vm", "--size", "16M")
	type point struct{ id, ref string }
	var points []point
	for g := range 2 {
		e.apply(t, "vm", randomWrites(rng, 16<<20, 8-4*g, 512<<10))
		ref := filepath.Join(dir, "ref"+strconv.Itoa(g)+".raw")
		e.reference(t, "vm", ref)
		points = append(points, point{e.backupJSON(t, "vm").ID, ref})
	}
	sock := filepath.Join(dir, "p.sock")
	for i, p := range points {
		id := p.id
		if i == 1 {
			id = id[:12] // a prefix names it too
		}
		uris, cmd, stderr := e.servePoint(t, id, "--socket", sock)
		uri := uris[0]
		if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("point %d: socket %v, want mode 0600: %v", i, fi.Mode(), err)
		}
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, p.ref).CombinedOutput(); err != nil {
			t.Fatalf("point %d: qemu-img compare: %v: %s", i, err, out)
		}
		copied := filepath.Join(dir, "copy.raw")
		if out, err := exec.Command("nbdcopy", uri, copied).CombinedOutput(); err != nil {
			t.Fatalf("point %d: nbdcopy: %v: %s", i, err, out)
		}
		if err := sameFile(copied, p.ref); err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		if got, want := dataBytes(t, uri), nonZeroBlocks(t, p.ref)*e2eBlock; got != want {
			t.Errorf("point %d: nbdinfo --map shows %d bytes of data, the image has %d in non-zero chunks", i, got, want)
		}
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", uri).CombinedOutput(); err == nil ||
			!strings.Contains(string(out), "Permission denied") && !strings.Contains(string(out), "read-only") {
			t.Fatalf("point %d: a write was not refused as read-only: %v: %s", i, err, out)
		}
		if i == 0 {
			overlayBoot(t, dir, uri, p.ref)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("point %d: serve-point after SIGTERM: %v: %s", i, err, stderr)
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Fatalf("point %d: socket left behind: %v", i, err)
		}
	}
	// The damaged blob belongs to one point or both, depending on which
	// backup wrote the largest pack.
	corruptLargestPack(t, e)
	failed := 0
	for _, p := range points {
		uris, cmd, stderr := e.servePoint(t, p.id, "--socket", sock)
		out, err := exec.Command("nbdcopy", uris[0], filepath.Join(dir, "bad.raw")).CombinedOutput()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if err == nil {
			continue
		}
		failed++
		if log := stderr.String(); !strings.Contains(log, "read failed") || !strings.Contains(log, "offset=") || !strings.Contains(log, "corrupt") {
			t.Fatalf("nbdcopy failed (%s) but serve-point logged no failed read with its offset: %s", out, log)
		}
	}
	if failed == 0 {
		t.Fatal("nbdcopy of every point succeeded with a damaged chunk")
	}
}

// overlayBoot does what instant recovery does: a qcow2 overlay backed by
// the served point takes a VM's writes; it then reads as the point with
// those writes on top.
func overlayBoot(t *testing.T, dir, uri, ref string) {
	t.Helper()
	ov := filepath.Join(dir, "overlay.qcow2")
	flat := filepath.Join(dir, "overlay.raw")
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", uri, ov},
		{"qemu-io", "-f", "qcow2", "-c", "write -q -P 0x55 64k 64k", ov},
		{"qemu-img", "convert", "-f", "qcow2", "-O", "raw", ov, flat},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	copy(want[64<<10:128<<10], bytes.Repeat([]byte{0x55}, 64<<10))
	got, err := os.ReadFile(flat)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("overlay on the served point: %v (equal: %v)", err, bytes.Equal(got, want))
	}
}

// corruptLargestPack flips a byte inside the first blob of the largest
// pack (which holds chunks only) and marks the repository damaged.
func corruptLargestPack(t *testing.T, e *e2e) string {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(e.repo, "data", "*", "*"))
	var pack string
	var best int64
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil && fi.Size() > best {
			pack, best = p, fi.Size()
		}
	}
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e.damaged = true
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	b[0] ^= 0x40
	f.WriteAt(b, 100)
	return pack
}

// TestE2EServePointTLS serves a point on TCP, which requires TLS and a
// client certificate from --tls-client-ca: qemu-img reads it through x509
// credentials that hold one; a plain client, a TLS client without a
// certificate and one whose certificate another CA signed are refused.
func TestE2EServePointTLS(t *testing.T) {
	needTools(t, "nbdinfo")
	e := newE2E(t, true)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	id := e.vmPoint(t, 4<<20, 4, 12, ref).ID
	pki := testcert.New(t)
	uris, cmd, stderr := e.servePoint(t, id, "--socket", filepath.Join(dir, "p.sock"), "--listen", "127.0.0.1:0",
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CACert)
	if !strings.HasPrefix(uris[1], "nbds://127.0.0.1:") {
		t.Fatalf("TCP URI %q", uris[1])
	}
	host, port, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(uris[1], "nbds://"), "/"), ":")
	out := filepath.Join(dir, "out.raw")
	if b, err := exec.Command("qemu-img", "convert", "--object", "tls-creds-x509,id=tls0,dir="+pki.Dir+",endpoint=client",
		"--image-opts", "driver=nbd,host="+host+",port="+port+",tls-creds=tls0", "-O", "raw", out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert over TLS: %v: %s", err, b)
	}
	if err := sameFile(out, ref); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("nbdinfo", "nbd://"+host+":"+port+"/").CombinedOutput(); err == nil {
		t.Fatalf("a plain client was served on TCP: %s", b)
	}
	noCert := t.TempDir() // the CA only: TLS, but no client certificate
	if err := os.Link(pki.CACert, filepath.Join(noCert, "ca-cert.pem")); err != nil {
		t.Fatal(err)
	}
	other := testcert.New(t) // a client certificate from another CA
	otherDir := t.TempDir()
	for _, f := range []struct{ from, to string }{{pki.CACert, "ca-cert.pem"}, {other.ClientCert, "client-cert.pem"}, {other.ClientKey, "client-key.pem"}} {
		if err := os.Link(f.from, filepath.Join(otherDir, f.to)); err != nil {
			t.Fatal(err)
		}
	}
	for name, d := range map[string]string{"no client certificate": noCert, "another CA's certificate": otherDir} {
		if b, err := exec.Command("nbdinfo", "nbds://"+host+":"+port+"/?tls-certificates="+d).CombinedOutput(); err == nil {
			t.Fatalf("%s was served: %s", name, b)
		}
	}
	if b, err := exec.Command("nbdinfo", "--size", uris[0]).CombinedOutput(); err != nil {
		t.Fatalf("the unix socket needs no certificate: %v: %s", err, b)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve-point after SIGTERM: %v: %s", err, stderr)
	}
}
