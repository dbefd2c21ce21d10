package disk

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/cbt"
)

const scatterSize = 1 << 30

// scatterWrites are the small writes of TestCrashOverReportSIGKILL: a few
// MiB in all, spread over the whole disk.
func scatterWrites(seed int64) [][2]int64 {
	rng := rand.New(rand.NewSource(seed))
	var ws [][2]int64
	for range 40 {
		n := (rng.Int63n(32) + 1) * 4096
		ws = append(ws, [2]int64{rng.Int63n((scatterSize-n)/4096) * 4096, n})
	}
	return ws
}

// scatterChild writes scatterWrites, acknowledging each, then waits to be
// killed without flushing or closing.
func scatterChild(dir string, seed int64, out io.Writer) error {
	d, err := openCrashDisk(dir)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	for i, wr := range scatterWrites(seed) {
		if _, err := d.WriteAt(payload(seed*1e6+int64(i), wr[1]), wr[0]); err != nil {
			return err
		}
		fmt.Fprintf(w, "A %d\n", i)
		w.Flush()
	}
	fmt.Fprintln(w, "DONE")
	w.Flush()
	time.Sleep(time.Hour) // killed here (select{} alone would be a deadlock)
	return nil
}

// After kill -9 of a process that wrote a few small scattered areas of a
// 1 GiB disk, the next incremental reads at most the blocks written plus
// 64 MiB (it read a whole 256 MiB intent region per area touched before),
// and misses none of them: the block records the process appended reached
// the page cache, and the boot ID says the machine kept it. A copy of the
// same files opened under another boot ID (as after a power loss) cannot
// trust them and reports the whole intent regions written, still missing
// nothing.
func TestCrashOverReportSIGKILL(t *testing.T) {
	dir := t.TempDir()
	ds, err := OpenDatastore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Create("c", scatterSize, Options{}) // default CBT geometry
	if err != nil {
		t.Fatal(err)
	}
	base, err := d.CreateSnapshot("base", "")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	seed := time.Now().UnixNano() % 1e6
	lines := runChildUntil(t, dir, seed, "scatter", "DONE")
	if len(lines) == 0 || lines[len(lines)-1] != "DONE" {
		t.Fatalf("child did not finish its writes: %q", lines)
	}
	rebooted := t.TempDir()
	if out, err := exec.Command("cp", "-a", "--sparse=always", dir+"/.", rebooted).CombinedOutput(); err != nil {
		t.Fatalf("copy the datastore: %v: %s", err, out)
	}

	const g, region = 64 << 10, cbt.DefaultRegionSize
	written, regions := map[int64]bool{}, map[int64]bool{}
	for _, w := range scatterWrites(seed) {
		for o := w[0] / g * g; o < w[0]+w[1]; o += g {
			written[o], regions[o/region] = true, true
		}
	}
	changed := int64(len(written)) * g

	got, reported := changedSince(t, dir, base.ChangeID)
	t.Logf("written %d KiB in %d blocks; reported %d KiB", changed>>10, len(written), reported>>10)
	for o := range written {
		if !got[o] {
			t.Fatalf("block at %d written and not reported", o)
		}
	}
	if reported > changed+64<<20 {
		t.Fatalf("after a crash %d MiB reported changed for %d KiB written: over the %d MiB bound", reported>>20, changed>>10, (changed+64<<20)>>20)
	}

	got, reported = changedSince(t, rebooted, base.ChangeID, WithBootID("another-boot"))
	for o := range written {
		if !got[o] {
			t.Fatalf("under another boot ID: block at %d written and not reported", o)
		}
	}
	if want := min(int64(len(regions))*region, scatterSize); reported != want {
		t.Fatalf("under another boot ID %d MiB reported, want the %d intent regions written (%d MiB)", reported>>20, len(regions), want>>20)
	}
}

// changedSince opens disk "c" of the datastore at dir, takes a snapshot
// and returns the blocks it reports changed since the change ID, and how
// many bytes that is.
func changedSince(t *testing.T, dir, since string, opts ...DatastoreOption) (map[int64]bool, int64) {
	t.Helper()
	ds, err := OpenDatastore(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ds.Open("c")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	info, err := d.CreateSnapshot("after", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.OpenSnapshot(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ca, err := s.ChangedAreas(0, since)
	if err != nil {
		t.Fatal(err)
	}
	var reported int64
	for _, a := range ca.ChangedArea {
		reported += a.Length
	}
	return areaSet(ca, 64<<10), reported
}

// runChildUntil starts a crash child in mode, SIGKILLs it once it prints
// the line last (or after 30 s) and returns the lines it printed.
func runChildUntil(t *testing.T, dir string, seed int64, mode, last string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashEnv+"_SEED="+strconv.FormatInt(seed, 10), crashEnv+"_MODE="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	var lines []string
	for sc := bufio.NewScanner(out); sc.Scan(); {
		lines = append(lines, sc.Text())
		if sc.Text() == last {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, stderr.String())
	}
	return lines
}
