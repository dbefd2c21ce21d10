package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend/s3/s3test"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/testfs"
)

// pointProc is a running serve-point or recover: its unix URI and every
// line it printed on stdout, as it printed them.
type pointProc struct {
	cmd    *exec.Cmd
	uri    string
	lines  chan string
	stderr *syncBuf
	mu     sync.Mutex
	seen   []string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startPoint runs `blockwise args...` (serve-point or recover), waits for
// its unix URI and keeps reading its stdout; it is killed at cleanup.
func (e *e2e) startPoint(t *testing.T, args ...string) *pointProc {
	t.Helper()
	p := &pointProc{cmd: e.command(nil, args...), lines: make(chan string, 1000), stderr: &syncBuf{}}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	for p.uri == "" {
		if l := p.waitLine(t, "nbd+unix://", 30*time.Second); strings.HasPrefix(l, "nbd+unix://") {
			p.uri = l
		} else {
			p.mu.Lock()
			p.seen = nil // the next line
			p.mu.Unlock()
		}
	}
	return p
}

// waitLine returns the first line (seen or to come) containing s.
func (p *pointProc) waitLine(t *testing.T, s string, d time.Duration) string {
	t.Helper()
	p.mu.Lock()
	for _, l := range p.seen {
		if strings.Contains(l, s) {
			p.mu.Unlock()
			return l
		}
	}
	p.mu.Unlock()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%v ended before printing %q: %v\nstderr: %s", p.cmd.Args, s, p.cmd.Wait(), p.stderr)
			}
			p.mu.Lock()
			p.seen = append(p.seen, l)
			p.mu.Unlock()
			if strings.Contains(l, s) {
				return l
			}
		case <-timeout:
			t.Fatalf("%v printed no %q in %v; stdout %q\nstderr: %s", p.cmd.Args, s, d, p.seen, p.stderr)
		}
	}
}

// kill9 kills the process with SIGKILL.
func (p *pointProc) kill9() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// stop ends it with SIGTERM and returns its exit error.
func (p *pointProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.cmd.Wait()
}

// guestOp is one write of a guest: qemu-io's command and its effect on
// the model.
type guestOp struct {
	cmd     string
	off, n  int64
	pattern byte // 0: zeroes (write -z or discard)
}

// randomGuestOps: writes at any byte offset (partial blocks exercise the
// copy-up), some zeroes and discards, in [0, size).
func randomGuestOps(rng *rand.Rand, size int64, n int) []guestOp {
	var ops []guestOp
	for range n {
		l := 1 + rng.Int64N(192<<10)
		if rng.IntN(3) == 0 {
			l = (1 + rng.Int64N(16)) * 4096 // whole blocks too
		}
		off := rng.Int64N(size - l)
		if rng.IntN(2) == 0 {
			off &^= 4095
		}
		op := guestOp{off: off, n: l}
		switch k := rng.IntN(10); {
		case k < 7:
			op.pattern = byte(1 + rng.IntN(255))
			op.cmd = fmt.Sprintf("write -q -P 0x%02x %d %d", op.pattern, off, l)
		case k < 9:
			op.cmd = fmt.Sprintf("write -q -z %d %d", off, l)
		default:
			off, l = off&^511, max(l&^511, 512) // qemu-io discards sectors
			op.off, op.n = off, l
			op.cmd = fmt.Sprintf("discard -q %d %d", off, l)
		}
		ops = append(ops, op)
	}
	return ops
}

func (op guestOp) apply(model []byte) {
	for i := op.off; i < op.off+op.n; i++ {
		model[i] = op.pattern
	}
}

// guestIO runs ops through qemu-io on uri, then flushes (qemu-io does on
// exit): nil means they are all durable.
func guestIO(uri string, ops ...guestOp) error {
	args := []string{"-f", "raw"}
	for _, op := range ops {
		args = append(args, "-c", op.cmd)
	}
	out, err := exec.Command("qemu-io", append(args, "-c", "flush", uri)...).CombinedOutput()
	if err == nil && len(bytes.TrimSpace(out)) > 0 {
		err = fmt.Errorf("qemu-io said: %s", out)
	}
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// equalsModel copies uri with nbdcopy and compares it with the model
// byte for byte, and with qemu-img compare.
func equalsModel(t *testing.T, uri string, model []byte) {
	t.Helper()
	dir := t.TempDir()
	got, want := filepath.Join(dir, "got.raw"), filepath.Join(dir, "want.raw")
	if out, err := exec.Command("nbdcopy", uri, got).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy %s: %v: %s", uri, err, out)
	}
	if err := os.WriteFile(want, model, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sameFile(got, want); err != nil {
		t.Fatalf("%s differs from the model of the guest's writes: %v", uri, err)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, want).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare %s: %v: %s", uri, err, out)
	}
}

func readModel(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestE2EServePointWritable serves a point read-write: qemu-io's writes
// (unaligned, zeroes, discards) read back over NBD exactly as a model of
// them says, through nbdcopy and qemu-img compare; the printed -drive
// options open the export in qemu; the writes survive a kill -9 and a
// restart on the same overlay; and the backup itself never changes.
func TestE2EServePointWritable(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	id := e.vmPoint(t, 8<<20, 6, 21, ref).ID
	model := readModel(t, ref)
	ov, sock := filepath.Join(dir, "ov"), filepath.Join(dir, "w.sock")
	args := []string{"serve-point", id, "--socket", sock, "--writable", "--overlay", ov}
	p := e.startPoint(t, args...)
	rng := rand.New(rand.NewPCG(seed(t), 22))
	for _, op := range randomGuestOps(rng, 8<<20, 40) {
		if err := guestIO(p.uri, op); err != nil {
			t.Fatalf("%s: %v", op.cmd, err)
		}
		op.apply(model)
	}
	equalsModel(t, p.uri, model)
	drive := strings.Fields(p.waitLine(t, "-drive ", time.Second))[3]
	opts := strings.TrimSuffix(strings.TrimSuffix(drive, ",if=virtio"), ",cache=none")
	if out, err := exec.Command("qemu-io", "--image-opts", opts, "-c", "read -P 0 0 0").CombinedOutput(); err != nil {
		t.Fatalf("the printed -drive %s does not open in qemu: %v: %s", drive, err, out)
	}
	// The printed virsh line makes a valid network disk (libvirt's test
	// driver prints the XML it would attach).
	if _, err := exec.LookPath("virsh"); err == nil || os.Getenv("CI") != "" {
		f := strings.Fields(p.waitLine(t, "virsh attach-disk", time.Second))
		f[2] = "test" // DOMAIN
		out, err := exec.Command("virsh", append([]string{"-c", "test:///default"}, append(f[1:], "--print-xml")...)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "protocol='nbd'") || !strings.Contains(string(out), "socket='"+sock+"'") {
			t.Errorf("the printed virsh line: %v: %s", err, out)
		}
	}
	// Flushed writes survive a kill -9; the restart continues the overlay.
	p.kill9()
	p = e.startPoint(t, args...)
	equalsModel(t, p.uri, model)
	op := guestOp{cmd: "write -q -P 0x5a 4095 2", off: 4095, n: 2, pattern: 0x5a}
	if err := guestIO(p.uri, op); err != nil {
		t.Fatal(err)
	}
	op.apply(model)
	equalsModel(t, p.uri, model)
	if err := p.stop(); err != nil {
		t.Fatalf("serve-point --writable after SIGTERM: %v: %s", err, p.stderr)
	}
	e.restoreEquals(t, id, ref) // the backup is never modified
}

// TestE2EServePointWritableBadInput: a point that does not exist, flags
// that do not go together, an overlay directory in use by another
// serve-point or holding another point's writes, and a full overlay file
// system (the write fails with ENOSPC, the export keeps serving, and
// once there is room again writes go on with nothing lost).
func TestE2EServePointWritableBadInput(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	id := e.vmPoint(t, 8<<20, 4, 23, ref).ID
	ov, sock := filepath.Join(dir, "ov"), filepath.Join(dir, "w.sock")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"serve-point", "0123456789ab", "--writable", "--overlay", ov}, exitNotFound},
		{[]string{"serve-point", id, "--writable"}, exitUsage},
		{[]string{"serve-point", id, "--overlay", ov}, exitUsage},
		{[]string{"recover", "0123456789ab", "--to-disk", "new", "--overlay", ov}, exitNotFound},
		{[]string{"recover", id, "--to-disk", "new", "--overlay", ov, "--resume"}, exitNotFound},
		{[]string{"recover", id, "--overlay", ov}, exitUsage},
		{[]string{"recover", "--to-disk", "new", "--overlay", ov}, exitUsage},
		{[]string{"recover", "--status", "--overlay", ov}, exitNotFound},
		{[]string{"recover", "--status"}, exitUsage},
	} {
		if out, code := e.run(t, append(c.args, "--socket", sock)...); code != c.code {
			t.Errorf("%v: exit %d, want %d: %s", c.args, code, c.code, out)
		}
	}
	p := e.startPoint(t, "serve-point", id, "--socket", sock, "--writable", "--overlay", ov)
	if out, code := e.run(t, "serve-point", id, "--socket", filepath.Join(dir, "2.sock"), "--writable", "--overlay", ov); code != exitBusy || !strings.Contains(out, "in use") {
		t.Errorf("a second serve-point on the overlay in use: exit %d, want %d: %s", code, exitBusy, out)
	}
	if out, code := e.run(t, "recover", id, "--to-disk", "new", "--socket", filepath.Join(dir, "2.sock"), "--overlay", ov); code != exitBusy {
		t.Errorf("recover on the overlay serve-point is using: exit %d, want %d: %s", code, exitBusy, out)
	}
	p.stop()
	if out, code := e.run(t, "recover", id, "--to-disk", "vm", "--socket", sock, "--overlay", ov); code != exitBusy {
		t.Errorf("recover into a disk that exists: exit %d, want %d: %s", code, exitBusy, out)
	}
	if _, err := os.Stat(filepath.Join(ov, "recover.json")); !os.IsNotExist(err) {
		t.Errorf("a recovery that never started left its state: %v", err)
	}
	e.apply(t, "vm", randomWrites(rand.New(rand.NewPCG(seed(t), 24)), 8<<20, 2, 64<<10))
	other := e.backupJSON(t, "vm").ID
	if out, code := e.run(t, "serve-point", other, "--socket", sock, "--writable", "--overlay", ov); code != exitUsage || !strings.Contains(out, "another restore point") {
		t.Errorf("serve-point on another point's overlay: exit %d, want %d: %s", code, exitUsage, out)
	}

	fs := testfs.NewTmpfs(t, "1m")
	full := filepath.Join(fs.Dir, "ov")
	p = e.startPoint(t, "serve-point", id, "--socket", sock, "--writable", "--overlay", full)
	model := readModel(t, ref)
	big := guestOp{cmd: "write -q -P 0x77 0 4194304", off: 0, n: 4 << 20, pattern: 0x77}
	if err := guestIO(p.uri, big); err == nil || !strings.Contains(err.Error(), "No space left") {
		t.Fatalf("a 4 MiB write into a 1 MiB overlay: %v", err)
	}
	small := guestOp{cmd: "write -q -P 0x33 8192 100", off: 8192, n: 100, pattern: 0x33}
	equalsModel(t, p.uri, model) // still serving, the failed write not half-applied
	fs.Resize("64m")
	for _, op := range []guestOp{big, small} {
		if err := guestIO(p.uri, op); err != nil {
			t.Fatalf("after freeing space: %s: %v", op.cmd, err)
		}
		op.apply(model)
	}
	equalsModel(t, p.uri, model)
	p.stop()
	// An overlay directory on a full file system: refused at start.
	os.RemoveAll(full)
	fs.Resize("1m")
	filler, _ := os.Create(filepath.Join(fs.Dir, "filler"))
	filler.Write(make([]byte, 2<<20))
	filler.Close()
	if out, code := e.run(t, "serve-point", id, "--socket", sock, "--writable", "--overlay", filepath.Join(fs.Dir, "ov2")); code != exitNoSpace {
		t.Errorf("serve-point with its overlay on a full file system: exit %d, want %d: %s", code, exitNoSpace, out)
	}
}

// guestWriter writes like a guest through uri until stopped: each batch
// of ops is flushed; a batch that fails (the export went away) is tried
// again, since what it wrote is not known to be durable, so the model
// holds every write the guest saw flushed and nothing else.
type guestWriter struct {
	t     *testing.T
	rng   *rand.Rand
	size  int64
	model []byte

	mu      sync.Mutex
	stop    chan struct{}
	done    chan struct{}
	errs    int
	pending []guestOp // the batch to write next (retried until it succeeds)
}

func newGuestWriter(t *testing.T, seed uint64, size int64, model []byte) *guestWriter {
	return &guestWriter{t: t, rng: rand.New(rand.NewPCG(seed, 31)), size: size, model: model}
}

// start writes through uri until pause.
func (g *guestWriter) start(uri string) {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.done)
		for {
			select {
			case <-g.stop:
				return
			default:
			}
			if !g.once(uri) {
				time.Sleep(50 * time.Millisecond) // again, here or on the next export
			}
		}
	}()
}

// once writes the pending batch (a new one if none) and reports whether
// it was flushed.
func (g *guestWriter) once(uri string) bool {
	if g.pending == nil {
		g.pending = randomGuestOps(g.rng, g.size, 3)
	}
	if err := guestIO(uri, g.pending...); err != nil {
		g.mu.Lock()
		g.errs++
		g.mu.Unlock()
		return false
	}
	for _, op := range g.pending {
		op.apply(g.model)
	}
	g.pending = nil
	return true
}

// pause stops writing; a batch that failed is retried by the next start
// or settle.
func (g *guestWriter) pause() {
	close(g.stop)
	<-g.done
}

// settle writes the batch a kill interrupted, if any, through uri: what
// it wrote was not known to be durable, so only now does the model know
// the disk's content.
func (g *guestWriter) settle(t *testing.T, uri string) {
	t.Helper()
	if g.pending != nil && !g.once(uri) {
		t.Fatalf("the interrupted batch fails on the restarted export")
	}
}

// recoveryRig is a point of a disk "vm" filled with random writes, the
// model of its bytes, and the recover command line for it.
type recoveryRig struct {
	id, ov, ref string
	model       []byte
	args        []string
}

func (e *e2e) recoveryRig(t *testing.T, size int64, stream uint64, rate string, extra ...string) *recoveryRig {
	t.Helper()
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	r := &recoveryRig{id: e.vmPoint(t, size, 10, stream, ref).ID, ov: filepath.Join(dir, "ov"), ref: ref}
	r.model = readModel(t, ref)
	r.args = append([]string{"recover", r.id, "--to-disk", "new", "--overlay", r.ov, "--socket", filepath.Join(dir, "r.sock"), "--rate-mb", rate}, extra...)
	return r
}

// TestE2ERecover recovers a point into a new disk while a guest writes to
// the export the whole time: after the switch (no reconnect: the same
// socket serves on) the export and the new disk, read from the host,
// both equal the model of the guest's writes; the overlay is deleted;
// recover --resume after the switch serves the disk.
func TestE2ERecover(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	const size = 24 << 20
	r := e.recoveryRig(t, size, 25, "8")
	id, model, ov, args := r.id, r.model, r.ov, r.args
	p := e.startPoint(t, args...)
	g := newGuestWriter(t, seed(t), size, model)
	g.start(p.uri)
	if st := e.recoverStatus(t, ov); st.Phase != "copying" || st.Total != size || st.Disk != "new" || st.Finished {
		t.Errorf("recover --status while copying: %+v", st)
	}
	line := p.waitLine(t, "switched to disk new", 90*time.Second)
	if st := e.recoverStatus(t, ov); st.Phase != "switched" || st.Done != size || !st.Finished {
		t.Errorf("recover --status after the switch: %+v", st)
	}
	time.Sleep(300 * time.Millisecond) // writes after the switch, on the same connections' export
	g.pause()
	g.settle(t, p.uri)
	if g.errs > 0 {
		t.Fatalf("%d guest write batches failed during recover: %s", g.errs, p.stderr)
	}
	var copied, resumed, again int
	if _, err := fmt.Sscanf(line, "switched to disk new: %d chunks copied, %d resumed as copied, %d copied again", &copied, &resumed, &again); err != nil || again == 0 || copied == 0 {
		t.Fatalf("switch line %q (%v): the guest's writes did not race the copy", line, err)
	}
	equalsModel(t, p.uri, model)
	equalsModel(t, e.uri("new"), model)
	if overlayLeft(ov) {
		t.Fatal("the overlay is left after the switch")
	}
	if err := p.stop(); err != nil {
		t.Fatalf("recover after SIGTERM: %v: %s", err, p.stderr)
	}
	p = e.startPoint(t, append(args, "--resume")...)
	p.waitLine(t, "switched to disk new already", 10*time.Second)
	equalsModel(t, p.uri, model)
	p.stop()
	e.restoreEquals(t, id, r.ref) // the backup is never modified
}

// recoverStatus is `recover --status --json` of the overlay dir.
func (e *e2e) recoverStatus(t *testing.T, dir string) backup.RecoverProgress {
	t.Helper()
	var st backup.RecoverProgress
	e.jsonOut(t, &st, "recover", "--status", "--overlay", dir)
	return st
}

func overlayLeft(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "overlay.data"))
	return err == nil
}

// TestE2ERecoverKill: kill -9 of recover at random moments while a guest
// writes, each time restarted with --resume; then the host dies during
// the copy (the copy stops, the export keeps taking writes from the
// overlay, which is kept) and comes back; recover --resume then finishes.
// The new disk equals the model of every write the guest saw flushed.
func TestE2ERecoverKill(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	e := newE2E(t, true)
	const size = 16 << 20
	r := e.recoveryRig(t, size, 27, "3", "--checkpoint", "200ms")
	model, ov, args := r.model, r.ov, r.args
	g := newGuestWriter(t, seed(t), size, model)
	rng := rand.New(rand.NewPCG(seed(t), 28))
	for i := range 3 {
		a := args
		if i > 0 {
			a = append(a, "--resume")
		}
		p := e.startPoint(t, a...)
		g.settle(t, p.uri)
		equalsModel(t, p.uri, model) // nothing flushed was lost
		g.start(p.uri)
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		p.kill9()
		g.pause()
		if !overlayLeft(ov) {
			t.Fatalf("round %d: recovery finished before the kill (make it slower)", i)
		}
	}
	// The host fails mid-copy: the copy stops, serving goes on.
	p := e.startPoint(t, append(args, "--resume")...)
	g.start(p.uri)
	time.Sleep(500 * time.Millisecond)
	e.d.cmd.Process.Kill()
	e.d.cmd.Wait()
	p.waitLine(t, "recover stopped", 30*time.Second)
	if st := e.recoverStatus(t, ov); st.Phase != "stopped" || st.Error == "" {
		t.Errorf("recover --status after the host failed: %+v", st)
	}
	time.Sleep(300 * time.Millisecond) // the guest goes on writing to the overlay
	g.pause()
	g.settle(t, p.uri)
	equalsModel(t, p.uri, model)
	if !overlayLeft(ov) {
		t.Fatal("the overlay is gone after a failed recovery")
	}
	if err := p.stop(); err == nil {
		t.Fatal("recover whose copy failed exited 0")
	}
	e.d = startServeIn(t, e.d.dir)
	p = e.startPoint(t, append(args, "--resume")...)
	g.start(p.uri)
	p.waitLine(t, "switched to disk new", 90*time.Second)
	g.pause()
	g.settle(t, p.uri)
	equalsModel(t, p.uri, model)
	equalsModel(t, e.uri("new"), model)
	p.stop()
}

// TestE2ERecoverS3 recovers from a repository on a real S3 server
// (versitygw) while a guest writes; the S3 server dies mid-copy (the
// copy stops, the export keeps taking writes, the overlay stays), comes
// back on another port, and recover --resume finishes: the new disk
// equals the model of the guest's writes.
func TestE2ERecoverS3(t *testing.T) {
	needTools(t, "qemu-io", "nbdcopy", "qemu-img")
	s3dir := t.TempDir()
	srv, err := s3test.Start(s3dir)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() { srv.Stop() })
	if err := srv.MakeBucket(context.Background(), "backups"); err != nil {
		t.Fatal(err)
	}
	d := startServe(t)
	e := &e2e{d: d, cli: cli{dir: d.dir, combined: true}}
	repoEnv := func() {
		e.env = []string{"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey,
			"BLOCKWISE_PASSWORD=s3 recover", "BLOCKWISE_PASSWORD_FILE=", "BLOCKWISE_REPO=" + srv.URL("backups", "r")}
	}
	repoEnv()
	e.must(t, "repo", "init")
	const size = 12 << 20
	r := e.recoveryRig(t, size, 29, "6")
	model, ov, args := r.model, r.ov, r.args
	p := e.startPoint(t, args...)
	g := newGuestWriter(t, seed(t), size, model)
	g.start(p.uri)
	time.Sleep(time.Second)
	srv.Stop() // the repository fails
	p.waitLine(t, "recover stopped", 60*time.Second)
	g.pause()
	// Whole blocks need nothing from the repository: the export takes
	// them into the overlay and reads them back.
	op := guestOp{cmd: "write -q -P 0x6b 1048576 65536", off: 1 << 20, n: 64 << 10, pattern: 0x6b}
	if err := guestIO(p.uri, op, guestOp{cmd: "read -q -P 0x6b 1048576 65536"}); err != nil {
		t.Fatalf("the export with its repository down: %v", err)
	}
	op.apply(model)
	if !overlayLeft(ov) {
		t.Fatal("the overlay is gone after a failed recovery")
	}
	p.stop()
	if srv, err = s3test.Start(s3dir); err != nil {
		t.Fatal(err)
	}
	repoEnv()
	p = e.startPoint(t, append(args, "--resume")...)
	g.settle(t, p.uri)
	g.start(p.uri)
	p.waitLine(t, "switched to disk new", 90*time.Second)
	g.pause()
	equalsModel(t, p.uri, model)
	equalsModel(t, e.uri("new"), model)
	p.stop()
}
