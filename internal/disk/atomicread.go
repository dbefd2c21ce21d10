package disk

// A compare-and-write is the primitive hosts sharing a disk build on-disk
// locks with (client.SectorLease); they read those records with plain
// reads, as VMFS reads its heartbeats. A plain read takes no grain lock
// (it would queue behind every write in its MiB), so without more a read
// racing a CAW's store could copy half of the old record and half of the
// new one. Invariant C5: a read overlapping a CAW returns its bytes
// either all before or all after it. CAWs are rare and short, so reads
// check a per-stripe sequence count (a seqlock) instead of locking.

// maxOptimisticReads is how many times a read retries after racing a CAW
// before it takes the grain locks, which bounds its wait (C3).
const maxOptimisticReads = 3

// readLive reads p at off of the live chain, whole with respect to every
// compare-and-write (C5). Caller holds the shared barrier.
func (d *Disk) readLive(p []byte, off int64) error {
	spans := d.stripeSpans(d.grains(off, int64(len(p))))
	for range maxOptimisticReads {
		before, busy := d.cawCount(spans)
		if busy {
			break
		}
		if err := d.readChain(d.chain, p, off); err != nil {
			return err
		}
		if after, _ := d.cawCount(spans); after == before {
			return nil
		}
	}
	unlock := d.lockGrains(d.grains(off, int64(len(p))))
	defer unlock()
	return d.readChain(d.chain, p, off)
}

// cawCount sums the sequence counts of the stripes and says whether a
// CAW is storing into one of them now (an odd count). The counts only
// grow, so an unchanged sum means no CAW stored in between.
func (d *Disk) cawCount(spans []stripeSpan) (sum uint64, busy bool) {
	for _, s := range spans {
		for i := s.a; i < s.b; i++ {
			c := d.cawSeq[i].Load()
			busy = busy || c&1 == 1
			sum += c
		}
	}
	return sum, busy
}

// cawStoring marks the stripes of [off, off+n) as being stored into by a
// CAW until the returned func runs. Caller holds their stripe locks.
func (d *Disk) cawStoring(off, n int64) func() {
	spans := d.stripeSpans(d.grains(off, n))
	bump := func() {
		for _, s := range spans {
			for i := s.a; i < s.b; i++ {
				d.cawSeq[i].Add(1)
			}
		}
	}
	bump()
	return bump
}
