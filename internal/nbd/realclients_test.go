package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testcert"
)

// need skips the test when a real client is not installed.
func need(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s not installed", bin)
	}
	return p
}

func runCmd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sparseImage is test content with data runs and zero runs.
func sparseImage(size int) []byte {
	b := make([]byte, size)
	copy(b[0:], pattern(64<<10, 1))
	copy(b[1<<20+512:], pattern(3000, 2))
	copy(b[size-8192:], pattern(8192, 3))
	return b
}

func filledExport(content []byte) *memExport {
	m := newMemExport(len(content))
	m.WriteAt(context.Background(), content, 0, false)
	for i, d := range m.dirty {
		m.dirty[i] = d && i%2 == 0 // a recognisable bitmap
	}
	return m
}

func TestQemuImgConvert(t *testing.T) {
	qemuImg := need(t, "qemu-img")
	checkGoroutines(t)
	content := sparseImage(4 << 20)
	src, dst := filledExport(content), newMemExport(4<<20)
	ts := startServer(t, map[string]*memExport{"src": src, "dst": dst}, ServerOptions{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out.raw")
	runCmd(t, qemuImg, "convert", "-f", "raw", "-O", "raw", ts.unixURI("src"), out)
	got, err := os.ReadFile(out)
	must(t, err)
	if !bytes.Equal(got, content) {
		t.Fatal("qemu-img convert from export: content differs")
	}
	in := filepath.Join(dir, "in.raw")
	must(t, os.WriteFile(in, content, 0o600))
	runCmd(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", in, ts.tcpURI("dst"))
	if !bytes.Equal(dst.bytes(), content) {
		t.Fatal("qemu-img convert into export: content differs")
	}
}

func TestQemuIO(t *testing.T) {
	qemuIO := need(t, "qemu-io")
	checkGoroutines(t)
	exp := newMemExport(2 << 20)
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{})
	out := runCmd(t, qemuIO, "-f", "raw",
		"-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1M 128k", "-c", "write -z 64k 64k",
		"-c", "flush", "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 1M 128k", "-c", "read -P 0 64k 64k",
		"-c", "discard 1M 64k", ts.unixURI("disk"))
	if strings.Contains(out, "fail") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io reported problems:\n%s", out)
	}
	// A wrong pattern must be noticed, or the check above proves nothing.
	bad, _ := exec.Command(qemuIO, "-f", "raw", "-c", "read -P 0x11 0 4k", ts.unixURI("disk")).CombinedOutput()
	if !strings.Contains(string(bad), "fail") {
		t.Fatalf("qemu-io did not notice a wrong pattern:\n%s", bad)
	}
	if d := exp.bytes(); d[0] != 0xab || d[1<<20+64<<10] != 0xcd || exp.flushes.Load() == 0 {
		t.Fatal("writes not at the export")
	}
}

func TestQemuIOConcurrentWriters(t *testing.T) {
	qemuIO := need(t, "qemu-io")
	checkGoroutines(t)
	exp := newMemExport(4 << 20)
	ts := startServer(t, map[string]*memExport{"disk": exp}, ServerOptions{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uri := ts.unixURI("disk")
			if i%2 == 1 {
				uri = ts.tcpURI("disk")
			}
			cmd := fmt.Sprintf("write -P %d %dM 1M", 0x10+i, i)
			out, err := exec.Command(qemuIO, "-f", "raw", "-c", cmd, "-c", "flush", uri).CombinedOutput()
			if err != nil {
				t.Errorf("writer %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	var args []string
	for i := range 4 {
		args = append(args, "-c", fmt.Sprintf("read -P %d %dM 1M", 0x10+i, i))
	}
	out := runCmd(t, qemuIO, append(append([]string{"-f", "raw"}, args...), ts.tcpURI("disk"))...)
	if strings.Contains(out, "fail") {
		t.Fatalf("read-back:\n%s", out)
	}
}

func TestNbdcopy(t *testing.T) {
	nbdcopy := need(t, "nbdcopy")
	checkGoroutines(t)
	content := sparseImage(4 << 20)
	src := filledExport(content)
	dsts := map[string]*memExport{"unix": newMemExport(4 << 20), "tcp": newMemExport(4 << 20)}
	ts := startServer(t, map[string]*memExport{"src": src, "dst-unix": dsts["unix"], "dst-tcp": dsts["tcp"]}, ServerOptions{})
	dir := t.TempDir()
	in := filepath.Join(dir, "in.raw")
	must(t, os.WriteFile(in, content, 0o600))
	for name, uri := range map[string]func(string) string{"unix": ts.unixURI, "tcp": ts.tcpURI} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+".raw")
			must(t, os.WriteFile(out, nil, 0o600))
			runCmd(t, nbdcopy, uri("src"), out)
			got, err := os.ReadFile(out)
			must(t, err)
			if !bytes.Equal(got, content) {
				t.Fatal("nbdcopy from export: differs")
			}
			runCmd(t, nbdcopy, in, uri("dst-"+name))
			if !bytes.Equal(dsts[name].bytes(), content) {
				t.Fatal("nbdcopy into export: differs")
			}
		})
	}
}

type mapEntry struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Type   uint32 `json:"type"`
}

func TestNbdinfo(t *testing.T) {
	nbdinfo := need(t, "nbdinfo")
	checkGoroutines(t)
	content := sparseImage(4 << 20)
	exp := filledExport(content)
	ts := startServer(t, map[string]*memExport{"disk": exp, "other": newMemExport(1 << 20)}, ServerOptions{})

	var list struct {
		Exports []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Size        int64    `json:"export-size"`
			Contexts    []string `json:"contexts"`
		} `json:"exports"`
	}
	must(t, json.Unmarshal([]byte(runCmd(t, nbdinfo, "--json", "--list", "nbd+unix:///?socket="+ts.sock)), &list))
	names := map[string]int64{}
	for _, e := range list.Exports {
		names[e.Name] = e.Size
		if e.Name == "disk" && (e.Description != "mem disk" || len(e.Contexts) != 2) {
			t.Errorf("disk listed as %+v", e)
		}
	}
	if len(names) != 2 || names["disk"] != 4<<20 || names["other"] != 1<<20 {
		t.Fatalf("nbdinfo --list: %v", names)
	}
	for _, ctxName := range []string{ContextBaseAllocation, dirtyContext} {
		t.Run(ctxName, func(t *testing.T) {
			var got []mapEntry
			out := runCmd(t, nbdinfo, "--json", "--map="+ctxName, ts.tcpURI("disk"))
			must(t, json.Unmarshal([]byte(out), &got))
			raw, err := exp.BlockStatus(context.Background(), ctxName, 0, exp.Size())
			must(t, err)
			var want []mapEntry
			var off int64
			for _, e := range raw {
				want = append(want, mapEntry{off, int64(e.Length), e.Flags})
				off += int64(e.Length)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("nbdinfo --map=%s:\n got %v\nwant %v", ctxName, got, want)
			}
		})
	}
}

func TestQemuImgTLS(t *testing.T) {
	qemuImg := need(t, "qemu-img")
	checkGoroutines(t)
	pki := testcert.New(t)
	content := sparseImage(2 << 20)
	src, dst := filledExport(content), newMemExport(2<<20)
	ts := startServer(t, map[string]*memExport{"src": src, "dst": dst},
		ServerOptions{TLSConfig: pki.ServerTLS(), RequireTLS: true})
	host, port, _ := strings.Cut(ts.tcp, ":")
	obj := "tls-creds-x509,id=tls0,dir=" + pki.Dir + ",endpoint=client"
	opts := func(export string) string {
		return fmt.Sprintf("driver=nbd,host=%s,port=%s,export=%s,tls-creds=tls0", host, port, export)
	}
	out := filepath.Join(t.TempDir(), "out.raw")
	runCmd(t, qemuImg, "convert", "--object", obj, "--image-opts", opts("src"), "-O", "raw", out)
	got, err := os.ReadFile(out)
	must(t, err)
	if !bytes.Equal(got, content) {
		t.Fatal("TLS convert from export: differs")
	}
	runCmd(t, qemuImg, "convert", "-n", "--object", obj, "-f", "raw", out, "--target-image-opts", opts("dst"))
	if !bytes.Equal(dst.bytes(), content) {
		t.Fatal("TLS convert into export: differs")
	}
	// Without TLS the server refuses.
	cmd := exec.Command(qemuImg, "info", ts.tcpURI("src"))
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("plain qemu-img against TLS-only server succeeded:\n%s", b)
	}
}
