package disk

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
)

const (
	crashEnv  = "BLOCKWISE_CRASH_CHILD"
	crashSize = 4 << 20
)

var crashCBT = cbt.Config{Granularity: 64 << 10, RegionSize: 1 << 20}

// crashMaxSnaps bounds the snapshots the crash loops keep: past it they
// delete instead of taking another, so the model's images (one per
// snapshot) stay a few megabytes however long the run (BLOCKWISE_LONG
// used to grow to gigabytes).
const crashMaxSnaps = 8

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		seed, _ := strconv.ParseInt(os.Getenv(crashEnv+"_SEED"), 10, 64)
		child := crashChild
		if os.Getenv(crashEnv+"_MODE") == "scatter" {
			child = scatterChild
		}
		if err := child(dir, seed, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// payload is the data of write number seed: the parent regenerates it.
func payload(seed int64, n int64) []byte {
	p := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(p)
	return p
}

// openCrashDisk opens disk "c" of the datastore at dir, as the crash
// children do after their parent made it.
func openCrashDisk(dir string) (*Disk, error) {
	ds, err := OpenDatastore(dir)
	if err != nil {
		return nil, err
	}
	return ds.Open("c")
}

// crashChild runs random operations until killed, announcing each before
// it starts ("B") and acknowledging it once it returned ("A").
func crashChild(dir string, seed int64, out io.Writer) error {
	d, err := openCrashDisk(dir)
	if err != nil {
		return err
	}
	return crashLoop(d, seed, out)
}

// crashLoop is the child's work on d, until an operation fails.
func crashLoop(d *Disk, seed int64, out io.Writer) (err error) {
	rng := rand.New(rand.NewSource(seed))
	w := bufio.NewWriter(out)
	say := func(f string, a ...any) { fmt.Fprintf(w, f+"\n", a...); w.Flush() }
	for i := int64(0); ; i++ {
		off := rng.Int63n(crashSize/Sector) * Sector
		n := min(crashSize-off, (rng.Int63n(256)+1)*Sector)
		switch op := rng.Intn(100); {
		case op < 70:
			say("B W %d %d %d", off, n, seed*1e6+i)
			_, err = d.WriteAt(payload(seed*1e6+i, n), off)
		case op < 78:
			say("B Z %d %d", off, n)
			err = d.Zero(off, n, rng.Intn(2) == 0)
		case op < 88:
			say("B F")
			err = d.Flush()
		case op < 95 && len(d.Snapshots()) < crashMaxSnaps:
			say("B S")
			var info SnapshotInfo
			if info, err = d.CreateSnapshot("", ""); errors.Is(err, ErrBusy) {
				say("A BUSY")
				continue
			} else if err != nil {
				return err // not taken: announce nothing
			}
			say("I %s %s", info.ID, info.ChangeID)
		default:
			snaps := d.Snapshots()
			if len(snaps) == 0 {
				continue
			}
			id := snaps[rng.Intn(len(snaps))].ID
			say("B D %s", id)
			if _, err = d.DeleteSnapshot(id); errors.Is(err, ErrBusy) {
				say("A BUSY")
				continue
			}
		}
		if err != nil {
			return err
		}
		say("A")
	}
}

// crashModel replays the child's announcements.
type crashModel struct {
	flushed []byte            // state all of whose writes are durable
	post    []crashWrite      // writes begun since the last flush
	sinceID string            // change ID of the last acknowledged snapshot
	cbtW    []crashWrite      // writes begun since that snapshot
	snaps   map[string][]byte // snapshot images (created, maybe deleted)
	gone    map[string]bool   // deletions acknowledged
	pending string            // last begun op, not acknowledged
	atBegin []byte            // the image when the pending op began
	iter    int
	// inflight are the blocks of the writes in flight at each crash since
	// the snapshot of sinceID: a crash may report them though they were
	// never acknowledged.
	inflight map[int64]bool
	// coarse: crashes are power losses (another boot ID), after which CBT
	// may report whole intent regions; else (kill -9) only the blocks
	// written and those in flight.
	coarse bool
	// cfg is the disk's CBT configuration (crashCBT when zero).
	cfg cbt.Config
}

// cbtCfg is the CBT configuration of the disk under test.
func (c *crashModel) cbtCfg() cbt.Config {
	if c.cfg.Granularity == 0 {
		return crashCBT
	}
	return c.cfg
}

type crashWrite struct {
	off  int64
	data []byte
	iter int
}

func (c *crashModel) apply(line string, cur *[]byte) {
	f := strings.Fields(line)
	switch {
	case f[0] == "B" && (f[1] == "W" || f[1] == "Z"):
		off, _ := strconv.ParseInt(f[2], 10, 64)
		n, _ := strconv.ParseInt(f[3], 10, 64)
		data := make([]byte, n)
		if f[1] == "W" {
			seed, _ := strconv.ParseInt(f[4], 10, 64)
			data = payload(seed, n)
		}
		w := crashWrite{off, data, c.iter}
		c.post, c.cbtW = append(c.post, w), append(c.cbtW, w)
		copy((*cur)[off:], data)
	case f[0] == "I": // snapshot taken: its image is everything so far
		c.snaps[f[1]] = bytes.Clone(*cur)
		c.sinceID, c.cbtW, c.inflight = f[2], nil, nil
		c.flushed, c.post = bytes.Clone(*cur), nil
	case line == "A" && c.pending == "B F":
		c.flushed, c.post = bytes.Clone(*cur), nil
	case line == "A" && strings.HasPrefix(c.pending, "B D "):
		// Gone for good (checkSnapshots makes sure): its image is no
		// longer needed, and keeping every image ever taken grows the
		// long run to gigabytes.
		id := strings.TrimPrefix(c.pending, "B D ")
		c.gone[id] = true
		delete(c.snaps, id)
	}
	if f[0] == "B" {
		c.pending, c.atBegin = line, bytes.Clone(*cur)
	}
	if f[0] == "A" || f[0] == "I" {
		c.pending = ""
	}
}

func TestCrashSIGKILL(t *testing.T) {
	iters := 50
	if long {
		iters = 500
	}
	dir := t.TempDir()
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", crashSize, Options{CBT: crashCBT})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := d.CreateSnapshot("base", "")
	d.Close()
	c := &crashModel{flushed: make([]byte, crashSize), sinceID: first.ChangeID,
		snaps: map[string][]byte{"base": make([]byte, crashSize)}, gone: map[string]bool{}}
	cur := make([]byte, crashSize)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < iters; i++ {
		lines := runChild(t, dir, rng.Int63(), time.Duration(5+rng.Intn(150))*time.Millisecond)
		c.iter = i
		for _, l := range lines {
			c.apply(l, &cur)
		}
		cur = c.verifyAfterCrash(t, ds, i)
	}
}

// runChild starts a child, lets it work for d, SIGKILLs it and returns the
// complete lines it printed.
func runChild(t *testing.T, dir string, seed int64, d time.Duration) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_SEED="+strconv.FormatInt(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(d, func() { cmd.Process.Signal(syscall.SIGKILL) })
	data, _ := io.ReadAll(out)
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, stderr.String())
	}
	text := string(data)
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	} else {
		text = ""
	}
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// verifyAfterCrash reopens the disk and checks data, snapshots and CBT; it
// returns the state the disk now holds, for the next round.
func (c *crashModel) verifyAfterCrash(t *testing.T, ds *Datastore, iter int) []byte {
	t.Helper()
	d, err := ds.Open("c")
	if err != nil {
		t.Fatalf("iteration %d: reopen: %v", iter, err)
	}
	defer d.Close()
	if err := d.Check(); err != nil {
		t.Fatalf("iteration %d: %v", iter, err)
	}
	got := make([]byte, len(c.flushed))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for s := int64(0); s < int64(len(got)); s += Sector {
		if !c.sectorOK(got, s) {
			t.Fatalf("iteration %d: sector at %d lost an acknowledged, flushed write (pending %q)", iter, s, c.pending)
		}
	}
	c.checkSnapshots(t, d, iter)
	verifyAfterCut(t, d, iter, c.snaps, got)
	c.checkCBT(t, d, iter, got)
	// The disk now holds got: that is durable from here on, and the
	// interrupted operation is settled.
	c.flushed, c.post, c.pending = bytes.Clone(got), nil, ""
	return got
}

func (c *crashModel) sectorOK(got []byte, s int64) bool {
	g := got[s : s+Sector]
	if bytes.Equal(g, c.flushed[s:s+Sector]) {
		return true
	}
	for _, w := range c.post {
		if s >= w.off && s < w.off+int64(len(w.data)) && bytes.Equal(g, w.data[s-w.off:s-w.off+Sector]) {
			return true
		}
	}
	return false
}

func (c *crashModel) checkSnapshots(t *testing.T, d *Disk, iter int) {
	for _, info := range d.Snapshots() {
		want, ok := c.snaps[info.ID]
		if !ok && c.pending == "B S" { // taken, killed before it said so
			want, ok = c.atBegin, true
			c.snaps[info.ID] = want
		}
		if !ok {
			t.Fatalf("iteration %d: unknown snapshot %s", iter, info.ID)
		}
		s, err := d.OpenSnapshot(info.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, s.Size())
		s.ReadAt(got, 0)
		s.Close()
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("iteration %d: snapshot %s differs at %d", iter, info.ID, i)
		}
	}
	for id := range c.gone {
		if _, err := d.OpenSnapshot(id); err == nil {
			t.Fatalf("iteration %d: deleted snapshot %s is back", iter, id)
		}
	}
}

// checkCBT: every write begun since the last acknowledged snapshot is
// reported changed by a snapshot taken now.
func (c *crashModel) checkCBT(t *testing.T, d *Disk, iter int, disk []byte) {
	task := d.Consolidation()
	if task != nil {
		<-task.Done()
	}
	info, err := d.CreateSnapshot(fmt.Sprintf("check-%d", iter), "")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.OpenSnapshot(info.ID)
	ca, err := s.ChangedAreas(0, c.sinceID)
	s.Close()
	if err != nil {
		t.Fatalf("iteration %d: changed areas since %s: %v", iter, c.sinceID, err)
	}
	got := areaSet(ca, Sector)
	acked := c.cbtW
	if strings.HasPrefix(c.pending, "B W") || strings.HasPrefix(c.pending, "B Z") {
		// Killed before its change was acknowledged: it must be reported
		// only where its data reached the disk.
		acked = acked[:len(acked)-1]
		w := c.cbtW[len(c.cbtW)-1]
		for o := w.off; o < w.off+int64(len(w.data)); o += Sector {
			landed := bytes.Equal(disk[o:o+Sector], w.data[o-w.off:o-w.off+Sector]) &&
				!bytes.Equal(disk[o:o+Sector], c.atBegin[o:o+Sector])
			if landed && !got[o] {
				t.Fatalf("iteration %d: CBT lost the unacknowledged write that landed at %d", iter, o)
			}
		}
		c.cbtW = acked
	}
	for i, w := range acked {
		for o := w.off; o < w.off+int64(len(w.data)); o += Sector {
			if !got[o] {
				t.Fatalf("iteration %d: CBT lost the write at %d (write %d of %d from iteration %d since %s, pending %q; areas %v)", iter, o, i, len(acked), w.iter, c.sinceID, c.pending, ca.ChangedArea)
			}
		}
	}
	c.noteInflight()
	c.checkOverReport(t, iter, ca)
	if _, err := d.DeleteSnapshot(info.ID); err != nil {
		t.Fatal(err)
	}
	<-d.Consolidation().Done()
	c.gone[info.ID] = true
	// Checked: CBT is checked from here on. Kept at the last snapshot a
	// child acknowledged, the change ID expired after Retain checks in a
	// row whose children were killed before acknowledging one (on a
	// loaded machine: the children died before their first operation).
	c.sinceID, c.cbtW, c.inflight = info.ChangeID, nil, nil
}

// checkOverReport: after a kill -9 CBT reports no block but those written
// since the change ID and those in flight at each crash since (format.md
// invariant 1a); after a power loss, no block outside their intent
// regions (invariant 1).
func (c *crashModel) checkOverReport(t *testing.T, iter int, ca *ChangedAreas) {
	unit := c.cbtCfg().Granularity
	if c.coarse {
		unit = c.cbtCfg().RegionSize
	}
	allowed := map[int64]bool{}
	for o := range c.inflight {
		allowed[o/unit] = true
	}
	for _, w := range c.cbtW {
		for o := w.off / unit * unit; o < w.off+int64(len(w.data)); o += unit {
			allowed[o/unit] = true
		}
	}
	for _, a := range ca.ChangedArea {
		for o := a.Start; o < a.Start+a.Length; o += c.cbtCfg().Granularity {
			if !allowed[o/unit] {
				t.Fatalf("iteration %d: block at %d reported changed since %s, neither written (%d writes) nor in flight at a crash (%d blocks)", iter, o, c.sinceID, len(c.cbtW), len(c.inflight))
			}
		}
	}
}

// noteInflight adds the blocks of the operation in flight at the crash to
// those a later check may find reported.
func (c *crashModel) noteInflight() {
	p := c.pending
	if !strings.HasPrefix(p, "B W") && !strings.HasPrefix(p, "B Z") {
		return
	}
	f := strings.Fields(p)
	off, _ := strconv.ParseInt(f[2], 10, 64)
	n, _ := strconv.ParseInt(f[3], 10, 64)
	if c.inflight == nil {
		c.inflight = map[int64]bool{}
	}
	g := c.cbtCfg().Granularity
	for o := off / g * g; o < off+n; o += g {
		c.inflight[o] = true
	}
}
