package fileres

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/blockwise/blockwise/internal/repo"
)

// chunkReader is what Source reads a point through: repo.Image, whose
// ReadChunks verifies every chunk against its ID and fetches
// neighbouring chunks of a pack in one ranged load.
type chunkReader interface {
	ReadChunks(ctx context.Context, first uint64, n int, dst []byte) ([]bool, error)
	ChunkSize() int
	Size() int64
}

var _ chunkReader = (*repo.Image)(nil)

// SourceOptions size a Source's cache and read-ahead.
type SourceOptions struct {
	// CacheBytes bounds the decoded chunks kept (default 64 MiB).
	CacheBytes int64
	// ReadAhead is the most chunks one miss loads when reads go in
	// order (default 64: 4 MiB at 64 KiB chunks); a random read loads
	// minReadAhead.
	ReadAhead int
}

// minReadAhead chunks are loaded by a miss that is not sequential: a
// directory walk touches inode tables and directory blocks that lie
// close together, and one ranged load of four chunks costs about what
// one costs on an object store.
const minReadAhead = 4

// Source is an io.ReaderAt over a restore point's image with a shared
// cache of decoded chunks and read-ahead: a miss loads a run of chunks in
// one ReadChunks call, growing the run while reads go in order. It is
// safe for concurrent use; concurrent readers of one chunk share a load.
type Source struct {
	im  chunkReader
	ctx context.Context
	cs  int64
	max int // chunks in the cache
	ra  int

	wg       sync.WaitGroup // background loads
	mu       sync.Mutex
	m        map[uint64]*list.Element // of *srcChunk
	lru      list.List
	next     uint64 // slot after the last run claimed: a miss there is sequential
	run      int    // current read-ahead
	lastRun  uint64 // first slot of the last miss's run
	lastPre  uint64 // first slot of the last prefetched run
	inflight int    // background loads running
	zero     []byte
	loads    int64 // ReadChunks calls, for tests and stats
	fetched  int64 // chunks loaded
}

type srcChunk struct {
	slot  uint64
	ready chan struct{}
	data  []byte
	err   error
}

// NewSource reads im (whose reads are bounded by ctx).
func NewSource(ctx context.Context, im chunkReader, o SourceOptions) *Source {
	if o.CacheBytes <= 0 {
		o.CacheBytes = 64 << 20
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = 64
	}
	cs := int64(im.ChunkSize())
	s := &Source{im: im, ctx: ctx, cs: cs, ra: o.ReadAhead, m: map[uint64]*list.Element{}, zero: make([]byte, cs)}
	s.max = int(max(o.CacheBytes/cs, int64(4*o.ReadAhead))) // room for the run read, the prefetched ones and more
	s.run = minReadAhead
	return s
}

// Size is the image size.
func (s *Source) Size() int64 { return s.im.Size() }

// Loads reports how many ranged loads and chunks the Source has made.
func (s *Source) Loads() (calls, chunks int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads, s.fetched
}

// ReadAt implements io.ReaderAt.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fileres: negative offset %d: %w", off, ErrDamaged)
	}
	n := 0
	for n < len(p) && off+int64(n) < s.Size() {
		pos := off + int64(n)
		c, err := s.chunk(uint64(pos / s.cs))
		if err != nil {
			return n, err
		}
		n += copy(p[n:], c[pos%s.cs:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// chunk returns slot's bytes, loading a run from slot on a miss. While
// reads go in order, the run after the one being read is loaded in the
// background too (at most maxPrefetch at a time), so decoding the next
// chunks overlaps the copying of these.
func (s *Source) chunk(slot uint64) ([]byte, error) {
	s.mu.Lock()
	if el, ok := s.m[slot]; ok {
		s.lru.MoveToFront(el)
		c := el.Value.(*srcChunk)
		s.prefetch(slot)
		s.mu.Unlock()
		return s.wait(c)
	}
	run := s.claim(slot)
	s.prefetch(slot)
	s.mu.Unlock()
	s.load(slot, run)
	return s.wait(run[0])
}

// maxPrefetch bounds the background loads of one Source.
const maxPrefetch = 4

// prefetch (under mu) starts loading the run after the current one when
// reads are sequential at full read-ahead and slot starts the run before
// it (the last miss or the last prefetch).
func (s *Source) prefetch(slot uint64) {
	if s.run < s.ra || s.inflight >= maxPrefetch || (slot != s.lastRun && slot != s.lastPre) {
		return
	}
	first := s.next
	run := s.claimRun(first, s.ra)
	if len(run) == 0 {
		return
	}
	s.lastPre = first
	s.inflight++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.loadCtx(s.ctx, first, run) // ends with the Source's context
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()
}

func (s *Source) wait(c *srcChunk) ([]byte, error) {
	select {
	case <-c.ready:
		return c.data, c.err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// claim (under mu) enters pending entries for slot and the following
// slots not cached, up to the read-ahead: doubled after a sequential
// miss, reset after a random one.
func (s *Source) claim(slot uint64) []*srcChunk {
	if slot == s.next {
		s.run = min(2*s.run, s.ra)
	} else {
		s.run = minReadAhead
	}
	s.lastRun = slot
	return s.claimRun(slot, s.run)
}

// claimRun (under mu) enters pending entries for up to n slots from
// first, stopping at one already cached or past the image.
func (s *Source) claimRun(first uint64, n int) []*srcChunk {
	slots := uint64((s.Size() + s.cs - 1) / s.cs)
	var run []*srcChunk
	for sl := first; sl < slots && len(run) < n; sl++ {
		if _, ok := s.m[sl]; ok {
			break
		}
		c := &srcChunk{slot: sl, ready: make(chan struct{})}
		s.m[sl] = s.lru.PushFront(c)
		run = append(run, c)
	}
	s.next = first + uint64(len(run))
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.m, old.Value.(*srcChunk).slot)
	}
	return run
}

// load reads run's chunks with one ReadChunks call (every chunk verified, F6
// against its ID) and publishes them; a failed load is forgotten, so the
// next reader tries again.
func (s *Source) load(first uint64, run []*srcChunk) {
	// A load serves every reader waiting for its chunks, so it runs to
	// its end even when the reader that started it gives up.
	s.loadCtx(context.WithoutCancel(s.ctx), first, run)
}

// Trim drops the least recently used chunks past keep bytes: a Source
// kept between requests (the file browser's) keeps what a listing reads
// again, not the last download.
func (s *Source) Trim(keep int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := int(keep / s.cs); s.lru.Len() > n; {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.m, old.Value.(*srcChunk).slot)
	}
}

// Wait waits for the background loads to end.
func (s *Source) Wait() { s.wg.Wait() }

func (s *Source) loadCtx(ctx context.Context, first uint64, run []*srcChunk) {
	n := len(run)
	buf := make([]byte, min(int64(n)*s.cs, s.Size()-int64(first)*s.cs))
	zero, err := s.im.ReadChunks(ctx, first, n, buf)
	s.mu.Lock()
	s.loads++
	s.fetched += int64(n)
	for i, c := range run {
		switch {
		case err != nil:
			c.err = err
			if el, ok := s.m[c.slot]; ok && el.Value == c {
				s.lru.Remove(el)
				delete(s.m, c.slot)
			}
		case zero[i]:
			c.data = s.zero[:min(s.cs, int64(len(buf))-int64(i)*s.cs)]
		default:
			lo := int64(i) * s.cs
			hi := min(lo+s.cs, int64(len(buf)))
			c.data = append([]byte(nil), buf[lo:hi]...) // a run buffer kept alive by one slot would defeat the bound
		}
		close(c.ready)
	}
	s.mu.Unlock()
}
