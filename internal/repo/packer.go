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
// reaches the target size. Encoding happens outside the lock, so
// concurrent PutChunk callers compress and encrypt in parallel; the
// caller whose blob fills a pack uploads it, which bounds uploads in
// flight by the number of callers.
type packer struct {
	r         *Repository
	mu        sync.Mutex
	buf       []byte
	entries   []packEntry
	done      []packInfo // uploaded packs no index file names yet
	attempted []ID       // packs we tried to save that no index file may name, for Abort
	stored    uint64
	onUpload  func(context.Context) error
	// allocating: a goroutine is making the next pack buffer; others wait
	// on cond (lazily made, on mu) rather than make one each.
	allocating bool
	cond       *sync.Cond
}

func (p *packer) add(ctx context.Context, t BlobType, id ID, plain []byte) error {
	s := scratchPool.Get().(*blobScratch)
	defer scratchPool.Put(s)
	stored, flags := p.r.encodeBlob(t, id, plain, s)
	return p.addSealed(ctx, packEntry{Type: t, Flags: flags, ID: id, Raw: uint32(len(plain))}, stored)
}

// packBufs recycles pack buffers (16 MiB by default): allocating one per
// pack costs zeroing and faulting it in every time. Room for the blob that
// crosses the target is included, so no pack regrows.
var packBufs sync.Pool

func (p *packer) newBuf() []byte {
	n := int(p.r.cfg.PackSize) + int(p.r.maxBlob()) + p.r.crypt.overhead()
	if b, ok := packBufs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	b := fsutil.AlignedBuffer(n) // so the local backend writes it without a bounce copy
	b = b[:n]
	for i := 0; i < n; i += 4096 {
		b[i] = 0 // fault in now, not while appending under the lock
	}
	return b[:0]
}

// addSealed appends an already encoded blob; e.Offset and e.Stored are
// set here.
func (p *packer) addSealed(ctx context.Context, e packEntry, stored []byte) error {
	p.mu.Lock()
	for p.buf == nil {
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
		p.buf = b
		p.cond.Broadcast()
	}
	e.Offset, e.Stored = uint32(len(p.buf)), uint32(len(stored))
	p.entries = append(p.entries, e)
	p.buf = append(p.buf, stored...)
	var full []byte
	var ents []packEntry
	if len(p.buf) >= int(p.r.cfg.PackSize) {
		full, ents, p.buf, p.entries = p.buf, p.entries, nil, nil
	}
	p.mu.Unlock()
	if full == nil {
		return nil
	}
	return p.upload(ctx, full, ents)
}

// flush uploads the partial pack, if any.
func (p *packer) flush(ctx context.Context) error {
	p.mu.Lock()
	full, ents := p.buf, p.entries
	p.buf, p.entries = nil, nil
	p.mu.Unlock()
	if len(ents) == 0 {
		return nil
	}
	return p.upload(ctx, full, ents)
}

func (p *packer) upload(ctx context.Context, data []byte, entries []packEntry) error {
	hdr := p.r.crypt.seal(encodePackHeader(entries), []byte(packHeaderMagic))
	body := len(data)
	data = append(data, hdr...)
	data = append(data, encodePackTrailer(len(hdr))...)
	defer packBufs.Put(&data) // Save keeps no reference
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
// at least min. From here on an index file may name them, so removeAll
// leaves them alone, even if writing that index fails: a pack that may be
// named must stay.
func (p *packer) takeDone(min int) []packInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.done) < min {
		return nil
	}
	done := p.done
	p.done = nil
	named := make(map[ID]bool, len(done))
	for _, d := range done {
		named[d.ID] = true
	}
	p.attempted = slices.DeleteFunc(p.attempted, func(id ID) bool { return named[id] })
	return done
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
