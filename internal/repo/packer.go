package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/fsutil"
)

// packer gathers sealed blobs into packs and uploads each pack when it
// reaches the target size. Compression and sealing happen outside the
// lock, so concurrent PutChunk callers compress and encrypt in parallel
// (sealing straight into the pack buffer); the caller that finishes a
// full pack uploads it, which bounds uploads in flight by the number of
// callers.
type packer struct {
	r         *Repository
	mu        sync.Mutex
	cur       *openPack  // the pack taking blobs; nil until the next blob
	done      []packInfo // uploaded packs no index file names yet
	attempted []ID       // packs we tried to save that no index file may name, for Abort
	stored    uint64
	onUpload  func(context.Context) error
	// allocating: a goroutine is making the next pack buffer; others wait
	// on cond (lazily made, on mu) rather than make one each.
	allocating bool
	cond       *sync.Cond
}

// openPack is a pack being filled. Blobs reserve their place under the
// packer's lock and are sealed into it outside the lock, straight into
// the buffer that is uploaded (no copy); the writer of the last
// reservation of a full pack uploads it.
type openPack struct {
	buf     []byte // len: bytes reserved
	entries []packEntry
	pending int  // reservations not yet written
	full    bool // no more reservations
}

func (p *packer) add(ctx context.Context, t BlobType, id ID, plain []byte) error {
	s := scratchPool.Get().(*blobScratch)
	defer scratchPool.Put(s)
	data, flags := p.r.compressBlob(plain, s)
	e := packEntry{Type: t, Flags: flags, ID: id, Raw: uint32(len(plain))}
	if !p.r.crypt.encrypted() {
		// Unencrypted blobs need no checksum: the ID is the plaintext hash
		// and is verified on every read.
		return p.addSealed(ctx, e, data)
	}
	n := len(data) + p.r.crypt.overhead()
	pk, place := p.reserve(e, n)
	if out := p.r.crypt.sealTo(place[:0], data, blobAD(t, id)); len(out) != n {
		panic(fmt.Sprintf("repo: sealed %d bytes into a %d-byte place", len(out), n))
	}
	return p.written(ctx, pk)
}

// packHeaderRoom is what a pack buffer keeps for its header: 1,500
// entries (a pack of 64 KiB chunks has ~256; one of tiny compressed
// chunks may have more, and then the append grows the buffer once).
const packHeaderRoom = 64 << 10

// packBufs recycles pack buffers (16 MiB by default): allocating one per
// pack costs zeroing and faulting it in every time. Room for the blob that
// crosses the target is included, so no pack regrows.
var packBufs sync.Pool

// packSpares keeps the last two pack buffers given back through garbage
// collections, which empty packBufs: a backup whose heap is mostly other
// things (a 2 TiB disk's tree groups) collected often enough that most
// packs got a fresh buffer, faulted in page by page (12% of a scattered
// incremental's CPU).
var packSpares = make(chan *[]byte, 2)

// getPackBuf returns a recycled buffer of at least n bytes, or nil.
func getPackBuf(n int) []byte {
	for {
		var b *[]byte
		select {
		case b = <-packSpares:
		default:
			b, _ = packBufs.Get().(*[]byte)
		}
		if b == nil {
			return nil
		}
		if cap(*b) >= n {
			return (*b)[:0]
		}
	}
}

// putPackBuf gives a buffer back for the next pack.
func putPackBuf(b *[]byte) {
	select {
	case packSpares <- b:
	default:
		packBufs.Put(b)
	}
}

func (p *packer) newBuf() []byte {
	// Room for the blob that crosses the target size and for the header
	// and trailer appended at upload (a full buffer made that append copy
	// the whole pack into a fresh one: 60 MiB of a small backup's memory).
	n := int(p.r.cfg.PackSize) + int(p.r.maxBlob()) + p.r.crypt.overhead() + packHeaderRoom
	if b := p.r.bufs.get(n); b != nil {
		return b
	}
	// Aligned so the local backend writes it without a bounce copy. Its
	// pages are faulted in as blobs are sealed into them, not all up
	// front: a pack flushed at commit, or one of the concurrent writers'
	// last packs, fills a part of its buffer, and touching the rest cost
	// ~13 µs a page here (free page reporting) for nothing.
	return fsutil.AlignedBuffer(n)
}

// addSealed appends an already encoded blob; e.Offset and e.Stored are
// set here.
func (p *packer) addSealed(ctx context.Context, e packEntry, stored []byte) error {
	pk, place := p.reserve(e, len(stored))
	copy(place, stored)
	return p.written(ctx, pk)
}

// reserve takes n bytes of the open pack for e, opening one if need be,
// and returns them. The buffer never moves (it has room for the blob that
// crosses the target size), so blobs are written into it concurrently.
func (p *packer) reserve(e packEntry, n int) (*openPack, []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cur == nil {
		if p.cond == nil {
			p.cond = sync.NewCond(&p.mu)
		}
		if p.allocating { // one new buffer at a time bounds memory
			p.cond.Wait()
			continue
		}
		// Allocated and faulted in outside the lock, so uploads that
		// finish meanwhile can record themselves.
		p.allocating = true
		p.mu.Unlock()
		b := p.newBuf()
		p.mu.Lock()
		p.allocating = false
		p.cur = &openPack{buf: b}
		p.cond.Broadcast()
	}
	pk := p.cur
	off := len(pk.buf)
	e.Offset, e.Stored = uint32(off), uint32(n)
	pk.entries = append(pk.entries, e)
	pk.buf = pk.buf[:off+n]
	pk.pending++
	if len(pk.buf) >= int(p.r.cfg.PackSize) {
		pk.full, p.cur = true, nil
	}
	return pk, pk.buf[off : off+n : off+n]
}

// written ends a reservation; the last one of a full pack uploads it.
func (p *packer) written(ctx context.Context, pk *openPack) error {
	p.mu.Lock()
	pk.pending--
	last := pk.full && pk.pending == 0
	buf, ents := pk.buf, pk.entries
	p.mu.Unlock()
	if !last {
		return nil
	}
	return p.upload(ctx, buf, ents)
}

// flush uploads the partial pack, if any.
// Every blob added has been written by then: add returns only after.
func (p *packer) flush(ctx context.Context) error {
	p.mu.Lock()
	pk := p.cur
	p.cur = nil
	p.mu.Unlock()
	if pk == nil || len(pk.entries) == 0 {
		return nil
	}
	return p.upload(ctx, pk.buf, pk.entries)
}

func (p *packer) upload(ctx context.Context, data []byte, entries []packEntry) error {
	hdr := p.r.crypt.seal(encodePackHeader(entries), []byte(packHeaderMagic))
	body := len(data)
	data = append(data, hdr...)
	data = append(data, encodePackTrailer(len(hdr))...)
	defer p.r.bufs.put(&data) // Save keeps no reference
	id := packID(data[body:])
	p.mu.Lock()
	p.attempted = append(p.attempted, id)
	p.mu.Unlock()
	// ErrExists means a pack with this exact hash, so these exact bytes,
	// is already stored.
	err := p.r.be.Save(ctx, backend.Handle{Type: backend.Data, Name: id.String()}, data)
	if err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("repo: save pack %v: %w", id.Short(), err)
	}
	p.mu.Lock()
	p.done = append(p.done, packInfo{ID: id, Entries: entries})
	p.stored += uint64(len(data))
	p.mu.Unlock()
	if p.onUpload != nil {
		return p.onUpload(ctx)
	}
	return nil
}

// takeDone hands over the uploaded packs for an index file, if there are
// at least min or they hold indexFileEntries blobs (small, well
// compressed chunks put hundreds of thousands in 64 packs, and a process
// opening the repository holds a whole index file at once). From here on an index file may name them, so removeAll
// leaves them alone, even if writing that index fails: a pack that may be
// named must stay.
func (p *packer) takeDone(min int, verify func() error) ([]packInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.done) < min && entriesIn(p.done) < indexFileEntries {
		return nil, nil
	}
	// Under mu, every pack in done was sealed before verify runs.
	if verify != nil {
		if err := verify(); err != nil {
			return nil, err
		}
	}
	done := p.done
	p.done = nil
	named := make(map[ID]bool, len(done))
	for _, d := range done {
		named[d.ID] = true
	}
	p.attempted = slices.DeleteFunc(p.attempted, func(id ID) bool { return named[id] })
	return done, nil
}

func entriesIn(packs []packInfo) int {
	n := 0
	for _, p := range packs {
		n += len(p.Entries)
	}
	return n
}

// removeAll deletes every pack this packer tried to save that no index
// file may name.
func (p *packer) removeAll(ctx context.Context) error {
	var errs []error
	for _, id := range p.attempted {
		err := p.r.be.Remove(ctx, backend.Handle{Type: backend.Data, Name: id.String()})
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
