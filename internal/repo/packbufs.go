package repo

import "sync"

// packBufPool keeps one repository's idle pack buffers for its next
// packs: up to two for each writer open on it (its open pack and one
// being uploaded), so the disks of `backup --parallel N` reuse the
// buffers the first N faulted in. The package-wide spares keep two, which
// left every other concurrent writer faulting in a fresh 17 MiB buffer
// (half the CPU of ten small disks backed up eight at a time). Buffers
// beyond that bound go to the package-wide spares, and the garbage
// collector, as writers end: what a repository keeps follows its current
// concurrency, not its peak.
type packBufPool struct {
	mu      sync.Mutex
	free    []*[]byte
	writers int
}

// get returns an idle buffer of at least n bytes, emptied, or nil.
func (p *packBufPool) get(n int) []byte {
	p.mu.Lock()
	for len(p.free) > 0 {
		b := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if cap(*b) >= n {
			p.mu.Unlock()
			return (*b)[:0]
		}
	}
	p.mu.Unlock()
	return getPackBuf(n)
}

// put gives a buffer back for the next pack of any writer.
func (p *packBufPool) put(b *[]byte) {
	p.mu.Lock()
	if len(p.free) < p.keep() {
		p.free = append(p.free, b)
		b = nil
	}
	p.mu.Unlock()
	if b != nil {
		putPackBuf(b)
	}
}

// keep is how many idle buffers the pool holds; under mu.
func (p *packBufPool) keep() int { return 2 * p.writers }

// writerStarted and writerEnded count the writers using the pool; the
// buffers past the new bound leave when one ends.
func (p *packBufPool) writerStarted() {
	p.mu.Lock()
	p.writers++
	p.mu.Unlock()
}

func (p *packBufPool) writerEnded() {
	p.mu.Lock()
	p.writers--
	var extra []*[]byte
	if k := p.keep(); len(p.free) > k {
		extra = append(extra, p.free[k:]...)
		clear(p.free[k:])
		p.free = p.free[:k]
	}
	p.mu.Unlock()
	for _, b := range extra {
		putPackBuf(b)
	}
}

// drop hands every idle buffer to the package-wide spares
// (Repository.Close).
func (p *packBufPool) drop() {
	p.mu.Lock()
	free := p.free
	p.free = nil
	p.mu.Unlock()
	for _, b := range free {
		putPackBuf(b)
	}
}
