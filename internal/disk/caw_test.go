package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCompareAndWriteRequests: bad requests change nothing and say why; a
// miscompare returns the current bytes and writes nothing (and marks no
// CBT); a match writes and marks CBT. On a flat disk and in a chain.
func TestCompareAndWriteRequests(t *testing.T) {
	for _, chained := range []bool{false, true} {
		t.Run(fmt.Sprintf("chained=%v", chained), func(t *testing.T) {
			_, d := newDisk(t, 1<<20, Options{})
			base := bytes.Repeat([]byte{7}, 1<<20)
			if _, err := d.WriteAt(base, 0); err != nil {
				t.Fatal(err)
			}
			snap, err := d.CreateSnapshot("s0", "")
			if err != nil {
				t.Fatal(err)
			}
			if !chained {
				if _, err := d.DeleteSnapshot("s0"); err != nil {
					t.Fatal(err)
				}
				waitIdle(t, d)
			}
			sec := func(b byte) []byte { return bytes.Repeat([]byte{b}, Sector) }
			g := d.MaxCompareAndWrite()
			bad := []struct {
				name      string
				off       int64
				exp, data []byte
				want      error
			}{
				{"empty", 0, nil, nil, ErrCAWLength},
				{"lengths differ", 0, sec(7), sec(1)[:256], ErrCAWLength},
				{"over a grain", 0, make([]byte, g+Sector), make([]byte, g+Sector), ErrCAWLength},
				{"misaligned offset", 100, sec(7), sec(1), ErrMisaligned},
				{"misaligned length", 0, sec(7)[:100], sec(1)[:100], ErrMisaligned},
				{"past the end", 1 << 20, sec(7), sec(1), ErrOutOfRange},
				{"straddles the end", 1<<20 - Sector/2*2, append(sec(7), sec(7)...), append(sec(1), sec(1)...), ErrOutOfRange},
				{"negative", -Sector, sec(7), sec(1), ErrOutOfRange},
			}
			for _, c := range bad {
				if err := d.CompareAndWrite(c.off, c.exp, c.data); !errors.Is(err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, err, c.want)
				}
			}
			// A miscompare by one bit, at the last byte: exact compare.
			exp := sec(7)
			exp[Sector-1] ^= 1
			err = d.CompareAndWrite(4096, exp, sec(9))
			var me *MiscompareError
			if !errors.As(err, &me) || !errors.Is(err, ErrMiscompare) || !bytes.Equal(me.Current, sec(7)) {
				t.Fatalf("miscompare: %v", err)
			}
			assertRead(t, d, base)
			if chained {
				assertChanged(t, d, snap.ChangeID, nil)
			}
			// A match across a grain boundary (two grains, one grain long).
			off := int64(4096 - Sector)
			if err := d.CompareAndWrite(off, base[:g], bytes.Repeat([]byte{3}, int(g))); err != nil {
				t.Fatal(err)
			}
			copy(base[off:], bytes.Repeat([]byte{3}, int(g)))
			assertRead(t, d, base)
			if chained {
				assertChanged(t, d, snap.ChangeID, []int64{off, g})
			}
		})
	}
}

func waitIdle(t *testing.T, d *Disk) {
	t.Helper()
	for d.Consolidation() != nil && !isDone(d.Consolidation()) {
		time.Sleep(time.Millisecond)
	}
}

func assertRead(t *testing.T, d *Disk, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("disk differs at byte %d", i)
	}
}

// assertChanged: the changes since change (through a new snapshot) cover
// want (offset, length) and nothing outside the CBT blocks it touches.
func assertChanged(t *testing.T, d *Disk, change string, want []int64) {
	t.Helper()
	info, err := d.CreateSnapshot("", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.OpenSnapshot(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ca, err := s.ChangedAreas(0, change)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, a := range ca.ChangedArea {
		total += a.Length
	}
	if want == nil {
		if total != 0 {
			t.Fatalf("a miscompare marked CBT: %+v", ca.ChangedArea)
		}
		return
	}
	off, n := want[0], want[1]
	covered := false
	for _, a := range ca.ChangedArea {
		if a.Start <= off && a.Start+a.Length >= off+n {
			covered = true
		}
	}
	if !covered || total > 2*n+2*65536 {
		t.Fatalf("CBT after a CAW of %d+%d: %+v", off, n, ca.ChangedArea)
	}
}

// TestCompareAndWriteAtomic races compare-and-writes against raw writes
// of the same sector and of the rest of its grain (which, in a chain,
// copy the grain up). Every value is a sector of one writer's stamp:
// a CAW that succeeded must have seen the exact bytes it expected, the
// current bytes of a miscompare are never torn, the increments are
// never lost, and the raw writers' last sectors all survive.
//
// With rawSame a raw writer also writes the lease sector itself, with a
// sequence base above every CAW's: a read that starts after such a write
// completed must see a sequence at least that base (values only descend
// from it), so a CAW that compared before the raw write and wrote after
// it (the raw write lost) is caught.
func TestCompareAndWriteAtomic(t *testing.T) {
	for _, chained := range []bool{false, true} {
		for _, rawSame := range []bool{false, true} {
			t.Run(fmt.Sprintf("chained=%v/rawSame=%v", chained, rawSame), func(t *testing.T) {
				_, d := newDisk(t, 1<<20, Options{})
				if chained {
					if _, err := d.CreateSnapshot("s", ""); err != nil {
						t.Fatal(err)
					}
				}
				raceCAW(t, d, chained, rawSame)
			})
		}
	}
}

// stamp fills a sector with (who, seq) repeated: a torn sector mixes two.
func stamp(who, seq uint32) []byte {
	p := make([]byte, Sector)
	for i := 0; i < Sector; i += 8 {
		binary.LittleEndian.PutUint32(p[i:], who)
		binary.LittleEndian.PutUint32(p[i+4:], seq)
	}
	return p
}

func unstamp(p []byte) (who, seq uint32, ok bool) {
	return binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:]), bytes.Equal(p, stamp(binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])))
}

func raceCAW(t *testing.T, d *Disk, chained, rawSame bool) {
	const lease = 8192 + 3*Sector // sector 3 of grain 2
	const cawers, rounds = 4, 300
	if _, err := d.WriteAt(stamp(0, 0), lease); err != nil {
		t.Fatal(err)
	}
	var incs, rawBase atomic.Uint32
	var cw, bg sync.WaitGroup
	errc := make(chan error, cawers+3)
	stop := make(chan struct{})
	// The other sectors of the lease's grain and one of grain 1, each
	// stamped with a rising sequence: in a chain their partial writes
	// copy the grain up, lease sector included.
	var last sync.Map // offset → last sequence written there
	bg.Add(2)
	go func() {
		defer bg.Done()
		for seq := uint32(1); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			off := int64(8192 + int(seq%8)*Sector)
			if off == lease {
				off = 4096
			}
			if _, err := d.WriteAt(stamp(100, seq), off); err != nil {
				errc <- err
				return
			}
			last.Store(off, seq)
		}
	}()
	go func() { // big raw writes next to the lease grain
		defer bg.Done()
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := d.WriteAt(buf, 16384); err != nil {
				errc <- err
				return
			}
		}
	}()
	if rawSame {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := rawSameSector(d, lease, stop, &rawBase); err != nil {
				errc <- err
			}
		}()
	}
	for w := range cawers {
		cw.Add(1)
		go func() {
			defer cw.Done()
			if err := cawRounds(d, lease, uint32(w+1), rounds, &incs, &rawBase); err != nil {
				errc <- err
			}
		}()
	}
	cw.Wait()
	close(stop)
	bg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got := make([]byte, Sector)
	if _, err := d.ReadAt(got, lease); err != nil {
		t.Fatal(err)
	}
	who, seq, ok := unstamp(got)
	if rawSame {
		if !ok || seq < rawBase.Load() {
			t.Fatalf("lease sector %d/%d (whole %v) below the last raw write's %d", who, seq, ok, rawBase.Load())
		}
	} else if !ok || seq != incs.Load() || who < 1 || who > cawers {
		t.Fatalf("lease sector %d/%d (whole %v) after %d successful CAWs: an update was lost or torn", who, seq, ok, incs.Load())
	}
	if incs.Load() < cawers {
		t.Fatalf("only %d CAWs succeeded", incs.Load())
	}
	last.Range(func(k, v any) bool {
		off := k.(int64)
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if w, s, ok := unstamp(got); !ok || w != 100 || s != v.(uint32) {
			t.Fatalf("raw write at %d: read %d/%d, wrote 100/%d last: lost to a race", off, w, s, v)
		}
		return true
	})
	t.Logf("chained=%v: %d of %d CAWs won", chained, incs.Load(), rounds*cawers)
}

// cawRounds reads the lease sector and tries to increment its sequence,
// rounds times.
func cawRounds(d *Disk, lease int64, who uint32, rounds int, incs, rawBase *atomic.Uint32) error {
	cur := make([]byte, Sector)
	for range rounds {
		base := rawBase.Load()
		if _, err := d.ReadAt(cur, lease); err != nil {
			return err
		}
		_, seq, ok := unstamp(cur)
		if ok && seq < base {
			return fmt.Errorf("read sequence %d after the raw write of %d completed: that write was lost", seq, base)
		}
		runtime.Gosched() // let the others in between the read and the CAW
		// A torn read makes a miscompare, never a wrong write.
		err := d.CompareAndWrite(lease, cur, stamp(who, seq+1))
		var me *MiscompareError
		switch {
		case err == nil:
			incs.Add(1)
		case errors.As(err, &me):
			if _, _, ok := unstamp(me.Current); !ok {
				return fmt.Errorf("torn current bytes under the lock: % x", me.Current[:16])
			}
		default:
			return err
		}
	}
	return nil
}

// rawSameSector writes the lease sector with rising bases (k<<16, above
// any count of CAWs) and reads it back: it must never read less than the
// base it has just written.
func rawSameSector(d *Disk, lease int64, stop chan struct{}, rawBase *atomic.Uint32) error {
	got := make([]byte, Sector)
	for k := uint32(1); k < 1<<15; k++ {
		select {
		case <-stop:
			return nil
		default:
		}
		base := k << 16
		if _, err := d.WriteAt(stamp(200, base), lease); err != nil {
			return err
		}
		rawBase.Store(base)
		runtime.Gosched()
		if _, err := d.ReadAt(got, lease); err != nil {
			return err
		}
		if _, seq, ok := unstamp(got); ok && seq < base {
			return fmt.Errorf("raw write of %d lost: read %d after it", base, seq)
		}
	}
	return nil
}

// caw is the model's compare-and-write: half the time it expects what
// the model holds (it must write), otherwise one bit differs (it must not
// write, and must return exactly the model's bytes).
func (m *model) caw() {
	off, n := m.span()
	n = min(n, m.d.MaxCompareAndWrite())
	exp := bytes.Clone(m.ref[off : off+n])
	match := m.rng.Intn(2) == 0
	if !match {
		exp[m.rng.Int63n(n)] ^= 1 << m.rng.Intn(8)
	}
	p := make([]byte, n)
	m.rng.Read(p)
	m.log = append(m.log, fmt.Sprintf("caw %d+%d match=%v", off, n, match))
	err := m.d.CompareAndWrite(off, exp, p)
	var me *MiscompareError
	switch {
	case match && err == nil:
		copy(m.ref[off:], p)
		m.markDirty(off, n)
	case !match && errors.As(err, &me):
		if !bytes.Equal(me.Current, m.ref[off:off+n]) {
			m.fail("miscompare at %d+%d returned other bytes than the disk holds", off, n)
		}
	default:
		m.fail("caw %d+%d match=%v: %v", off, n, match, err)
	}
}

// TestModelCAW runs the engine's randomized model (writes, zeroes, grows,
// snapshots, consolidations, reopens, crashes) with compare-and-writes
// interleaved: reads equal the model, CBT misses no successful CAW and
// (checkLittleElse) reports no block only a miscompare touched.
func TestModelCAW(t *testing.T) {
	seqs, steps := 20, 150
	if long {
		seqs, steps = 300, 300
	}
	for i := range seqs {
		seed := time.Now().UnixNano() + int64(i)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			m := newModel(t, seed)
			t.Logf("seed %d", seed)
			n := steps
			if m.hot > 0 {
				n = steps / 3
			}
			for range n {
				if m.rng.Intn(3) == 0 {
					m.caw()
				} else {
					m.step()
				}
			}
			m.waitMerge()
			m.verify()
			if err := m.d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReadsSeeCAWWhole: readers of a grain never see a compare-and-write
// half stored (invariant C5): a CAW flips the whole grain between two
// uniform patterns while readers read it (and a sector of it) over and
// over. On a flat disk the CAW stores through a mapping, in a chain with
// write(2); neither is atomic against a concurrent read(2) on its own.
func TestReadsSeeCAWWhole(t *testing.T) {
	for _, chained := range []bool{false, true} {
		t.Run(fmt.Sprintf("chained=%v", chained), func(t *testing.T) {
			_, d := newDisk(t, 4<<20, Options{})
			g := d.MaxCompareAndWrite()
			off := 3 * g
			pat := [2][]byte{bytes.Repeat([]byte{0x11}, int(g)), bytes.Repeat([]byte{0xEE}, int(g))}
			if _, err := d.WriteAt(pat[0], off); err != nil {
				t.Fatal(err)
			}
			if chained {
				if _, err := d.CreateSnapshot("s0", ""); err != nil {
					t.Fatal(err)
				}
			}
			var stop atomic.Bool
			var reads, torn atomic.Int64
			var wg sync.WaitGroup
			for r := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := make([]byte, g>>uint(r)) // the grain, and its first half
					for !stop.Load() {
						if _, err := d.ReadAt(p, off); err != nil {
							t.Error(err)
							return
						}
						reads.Add(1)
						if !bytes.Equal(p, pat[0][:len(p)]) && !bytes.Equal(p, pat[1][:len(p)]) {
							torn.Add(1)
						}
					}
				}()
			}
			deadline := time.Now().Add(time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				if err := d.CompareAndWrite(off, pat[i%2], pat[(i+1)%2]); err != nil {
					t.Fatal(err)
				}
			}
			stop.Store(true)
			wg.Wait()
			if torn.Load() > 0 {
				t.Fatalf("%d of %d reads saw a compare-and-write half stored", torn.Load(), reads.Load())
			}
			t.Logf("%d reads, none torn", reads.Load())
		})
	}
}
