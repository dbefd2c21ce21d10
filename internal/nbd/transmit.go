package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// request is one parsed NBD request on its way to a worker.
type request struct {
	flags, typ uint16
	handle     uint64
	off        uint64
	length     uint32
	payload    *[]byte // WRITE data, from the server's pool
	code       uint32  // error decided while reading (oversized WRITE)
	cost       cost    // payload bytes taken from the budgets (see acquire)
}

// cost is what a request took from the connection's and the server's
// budgets: its payload bytes, at most each budget's size.
type cost struct{ conn, all int64 }

// reply is one encoded reply; buf goes back to the pool once written.
type reply struct {
	segs [][]byte
	buf  *[]byte
	cost cost // the request's budget, given back once the reply is sent
}

// transmit runs the transmission phase: this goroutine reads requests,
// a pool of workers executes them, one writer sends the replies.
func (c *serverConn) transmit() {
	jobs := make(chan *request, c.s.opts.Workers)
	out := make(chan *reply, c.s.opts.Workers)
	var workers sync.WaitGroup
	for range c.s.opts.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for r := range jobs {
				rep := c.handle(r)
				rep.cost = r.cost
				out <- rep
			}
		}()
	}
	writerDone := make(chan struct{})
	go c.writeReplies(out, writerDone)
	if nw, ok := c.exp.(NoWaitReader); ok && !c.s.opts.NoInlineReads {
		c.nowait = nw
	}
	c.readRequests(jobs, out)
	close(jobs)
	workers.Wait()
	close(out)
	<-writerDone
	// Whatever ended the connection, what the client wrote must be durable.
	if c.flags&FlagReadOnly == 0 {
		fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := c.exp.Flush(fctx); err != nil {
			c.log.Warn("nbd: flush on disconnect failed", "export", c.name, "err", err)
		}
		cancel()
	}
	if err := c.exp.Close(); err != nil {
		c.log.Warn("nbd: closing export failed", "export", c.name, "err", err)
	}
}

func (c *serverConn) readRequests(jobs chan<- *request, out chan<- *reply) {
	var h [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			c.logReadEnd(err)
			return
		}
		if binary.BigEndian.Uint32(h[0:]) != requestMagic {
			c.log.Warn("nbd: bad request magic; disconnecting")
			return
		}
		r := &request{
			flags:  binary.BigEndian.Uint16(h[4:]),
			typ:    binary.BigEndian.Uint16(h[6:]),
			handle: binary.BigEndian.Uint64(h[8:]),
			off:    binary.BigEndian.Uint64(h[16:]),
			length: binary.BigEndian.Uint32(h[24:]),
		}
		if r.typ == cmdDisc {
			c.log.Debug("nbd: client disconnect")
			return
		}
		if !c.acquire(r) {
			return
		}
		if r.typ == cmdWrite && !c.readPayload(r) {
			c.release(r.cost)
			return
		}
		if rep := c.runInline(r); rep != nil {
			rep.cost = r.cost
			out <- rep
			continue
		}
		jobs <- r
	}
}

// runInline runs r on the reader itself when that cannot stall the
// connection, and returns nil when r must go to a worker:
//
//   - a WRITE without FUA. Buffered writes to one file are serialised by
//     the kernel (the inode lock) and cost a few microseconds, so workers
//     only added two goroutine hand-offs and lock contention per request
//     (bench/nbd.sh fio 4 KiB randwrite: 0.61x nbdkit, server CPU per
//     write 70 us against nbdkit's 40 us; docs/performance.md, issue 23).
//     FUA writes wait for the disk and stay with the workers, so a
//     connection's reads are not held behind an fsync.
//   - a READ the export serves from memory (NoWaitReader: a page-cache
//     hit), for the same hand-offs (fio 4 KiB randread: 0.77x nbdkit).
//     A miss goes to a worker, so a read from the device never holds the
//     requests behind it.
func (c *serverConn) runInline(r *request) *reply {
	switch {
	case r.typ == cmdWrite && r.flags&cmdFlagFUA == 0:
		return c.handle(r)
	case r.typ == cmdRead && c.nowait != nil:
		return c.readNoWait(r)
	}
	return nil
}

// readNoWait answers a READ from memory, or returns nil (a worker reads).
// A request the server refuses is answered here too: that needs no I/O.
func (c *serverConn) readNoWait(r *request) *reply {
	if c.validate(r) != 0 || r.length == 0 {
		return c.handle(r)
	}
	buf := c.s.getBuf(int(r.length))
	if err := c.nowait.ReadAtNoWait(c.ctx, *buf, int64(r.off)); err != nil {
		c.s.putBuf(buf)
		return nil
	}
	return c.readReply(r, buf)
}

// acquire takes a READ's or WRITE's payload bytes from the connection's
// and the server's budgets before the request is read further or run,
// so the memory held for requests in flight is bounded however many a
// client pipelines and however many clients there are (a request larger
// than a budget takes all of it). False: the connection is ending.
func (c *serverConn) acquire(r *request) bool {
	if r.typ != cmdRead && r.typ != cmdWrite {
		return true
	}
	n := int64(r.length)
	k := cost{conn: min(n, c.s.opts.ConnBufferBytes), all: min(n, c.s.opts.BufferBytes)}
	if err := c.budget.Acquire(c.ctx, k.conn); err != nil {
		return false
	}
	if err := c.s.budget.Acquire(c.ctx, k.all); err != nil {
		c.budget.Release(k.conn)
		return false
	}
	r.cost = k
	return true
}

// release gives k back to both budgets.
func (c *serverConn) release(k cost) {
	c.s.budget.Release(k.all)
	c.budget.Release(k.conn)
}

func (c *serverConn) logReadEnd(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && c.isStopping(), errors.Is(err, net.ErrClosed):
	case errors.Is(err, io.EOF):
		c.log.Debug("nbd: client went away")
	default:
		c.log.Info("nbd: connection read failed", "err", err)
	}
}

// readPayload reads a WRITE's data. A payload over the limit is skipped
// when that is cheap (then refused with EINVAL) and ends the connection
// otherwise, since the spec leaves no other way to stay in sync.
func (c *serverConn) readPayload(r *request) bool {
	if r.length > c.maxPay {
		if uint64(r.length) > 2*uint64(c.maxPay) {
			c.log.Warn("nbd: oversized write; disconnecting", "length", r.length)
			return false
		}
		r.code = EINVAL
		return discard(c.br, int64(r.length)) == nil
	}
	r.payload = c.s.getBuf(int(r.length))
	if _, err := io.ReadFull(c.br, *r.payload); err != nil {
		c.s.putBuf(r.payload)
		c.logReadEnd(err)
		return false
	}
	return true
}

// writeReplies serialises reply frames. Headers and small replies are
// copied into one buffer; data segments are sent from the read buffers
// without a copy. Every reply already queued goes out in one writev
// (net.Buffers), so a 256 KiB READ costs one system call, not a header
// write, a 64 KiB buffer copy and a second write. After a write failure
// it keeps draining so that workers never block, and closes the socket so
// the reader stops too.
func (c *serverConn) writeReplies(out <-chan *reply, done chan<- struct{}) {
	defer close(done)
	const (
		copyMax  = 4 << 10 // segments up to this size are copied
		batchMax = 4 << 20 // bytes gathered before a write
	)
	var (
		werr    error
		small   = make([]byte, 0, 64<<10)
		vec     net.Buffers
		held    []*[]byte // read buffers referenced by vec
		spent   cost      // budget of the replies in vec
		mark    int       // start in small of the bytes not yet in vec
		pending int
	)
	send := func() {
		if mark < len(small) {
			vec = append(vec, small[mark:])
		}
		if werr == nil && len(vec) > 0 {
			v := vec // WriteTo consumes its receiver
			_, werr = v.WriteTo(c.w)
			if werr != nil {
				c.log.Debug("nbd: reply write failed", "err", werr)
				c.cancel()
				c.raw.Close()
			}
		}
		for _, b := range held {
			c.s.putBuf(b)
		}
		c.release(spent)
		clear(vec)
		vec, held, small, mark, pending, spent = vec[:0], held[:0], small[:0], 0, 0, cost{}
	}
	for r := range out {
		for _, seg := range r.segs {
			if len(seg) <= copyMax {
				if len(small)+len(seg) > cap(small) {
					// small is referenced by vec: send before reusing it.
					send()
				}
				small = append(small, seg...)
			} else {
				if mark < len(small) {
					vec = append(vec, small[mark:])
					mark = len(small)
				}
				vec = append(vec, seg)
			}
			pending += len(seg)
		}
		if r.buf != nil {
			held = append(held, r.buf)
		}
		spent.conn += r.cost.conn
		spent.all += r.cost.all
		if len(out) == 0 || pending >= batchMax {
			send()
		}
	}
	send()
}

// allowedFlags are the command flags valid per command; anything else
// is EINVAL (spec: unknown or inapplicable flags).
func (c *serverConn) allowedFlags(typ uint16) uint16 {
	switch typ {
	case cmdRead:
		if c.structured {
			return cmdFlagFUA | cmdFlagDF
		}
	case cmdWriteZeroes:
		return cmdFlagFUA | cmdFlagNoHole | cmdFlagFastZero
	case cmdBlockStatus:
		return cmdFlagFUA | cmdFlagReqOne
	}
	return cmdFlagFUA
}

// validate checks a request against the export; it returns an NBD error
// code, 0 when the request may go to the export.
func (c *serverConn) validate(r *request) uint32 {
	if r.typ > cmdBlockStatus || r.flags&^c.allowedFlags(r.typ) != 0 {
		return EINVAL
	}
	writes := r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes
	switch {
	case r.code != 0:
		return r.code
	case writes && c.flags&FlagReadOnly != 0:
		return EPERM
	case r.typ == cmdFlush:
		return 0
	case r.typ == cmdRead && r.length > c.maxPay:
		return EINVAL
	case r.off > c.size || uint64(r.length) > c.size-r.off:
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return ENOSPC
		}
		return EINVAL
	case r.typ == cmdBlockStatus && (len(c.meta) == 0 || r.length == 0):
		return EINVAL
	}
	return c.checkAlign(r)
}

func (c *serverConn) checkAlign(r *request) uint32 {
	m := uint64(c.sizes.Minimum)
	if m <= 1 || r.typ == cmdBlockStatus || r.typ == cmdCache {
		return 0
	}
	end := r.off + uint64(r.length)
	if r.off%m != 0 || (end%m != 0 && end != c.size) {
		return EINVAL
	}
	return 0
}

func (c *serverConn) handle(r *request) *reply {
	if r.payload != nil {
		defer c.s.putBuf(r.payload)
	}
	if code := c.validate(r); code != 0 {
		return c.errorReply(r, code, "invalid request")
	}
	ctx, off, n := c.ctx, int64(r.off), int64(r.length)
	var err error
	switch r.typ {
	case cmdRead:
		return c.doRead(r)
	case cmdBlockStatus:
		return c.doBlockStatus(r)
	case cmdWrite:
		if n > 0 {
			err = c.exp.WriteAt(ctx, *r.payload, off, r.flags&cmdFlagFUA != 0)
		}
	case cmdFlush:
		err = c.exp.Flush(ctx)
	case cmdTrim:
		if n > 0 {
			err = c.fua(r, c.exp.Trim(ctx, off, n))
		}
	case cmdWriteZeroes:
		if n > 0 {
			punch, fast := r.flags&cmdFlagNoHole == 0, r.flags&cmdFlagFastZero != 0
			err = c.fua(r, c.exp.Zero(ctx, off, n, punch, fast))
		}
	}
	if err != nil {
		return c.errorReply(r, ErrorCode(err), err.Error())
	}
	return simpleReply(r.handle, 0)
}

// fua makes a Trim or Zero durable when asked: Export has no FUA for them.
func (c *serverConn) fua(r *request, err error) error {
	if err != nil || r.flags&cmdFlagFUA == 0 {
		return err
	}
	return c.exp.Flush(c.ctx)
}

func simpleReply(handle uint64, code uint32) *reply {
	b := make([]byte, simpleHeaderLen)
	binary.BigEndian.PutUint32(b[0:], simpleMagic)
	binary.BigEndian.PutUint32(b[4:], code)
	binary.BigEndian.PutUint64(b[8:], handle)
	return &reply{segs: [][]byte{b}}
}

func chunkHeader(b []byte, flags, typ uint16, handle uint64, length int) []byte {
	b = binary.BigEndian.AppendUint32(b, structuredMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, uint32(length))
}

// errorReply uses an ERROR chunk where the spec wants a structured reply
// (READ and BLOCK_STATUS once negotiated), a simple reply elsewhere.
func (c *serverConn) errorReply(r *request, code uint32, msg string) *reply {
	if code != EINVAL && code != EPERM {
		c.log.Debug("nbd: request failed", "cmd", r.typ, "off", r.off, "len", r.length, "code", code, "err", msg)
	}
	if !c.structured || (r.typ != cmdRead && r.typ != cmdBlockStatus) {
		return simpleReply(r.handle, code)
	}
	msg = msg[:min(len(msg), maxStringLen)]
	b := chunkHeader(nil, replyFlagDone, chunkError, r.handle, 6+len(msg))
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return &reply{segs: [][]byte{append(b, msg...)}}
}

func (c *serverConn) doRead(r *request) *reply {
	buf := c.s.getBuf(int(r.length))
	if r.length > 0 {
		if err := c.exp.ReadAt(c.ctx, *buf, int64(r.off)); err != nil {
			c.s.putBuf(buf)
			return c.errorReply(r, ErrorCode(err), err.Error())
		}
	}
	return c.readReply(r, buf)
}

// readReply frames the data read into buf (from the server's pool, given
// to the reply): a simple reply, or structured chunks with the all-zero
// runs sent as holes.
func (c *serverConn) readReply(r *request, buf *[]byte) *reply {
	if !c.structured {
		rep := simpleReply(r.handle, 0)
		rep.segs, rep.buf = append(rep.segs, *buf), buf
		return rep
	}
	if r.length == 0 {
		c.s.putBuf(buf)
		return &reply{segs: [][]byte{chunkHeader(nil, replyFlagDone, chunkNone, r.handle, 0)}}
	}
	rep := &reply{buf: buf}
	runs := zeroRuns(*buf, r.off, r.flags&cmdFlagDF != 0)
	for i, run := range runs {
		var flags uint16
		if i == len(runs)-1 {
			flags = replyFlagDone
		}
		data := (*buf)[run.start:run.end]
		off := r.off + uint64(run.start)
		if run.zero {
			h := chunkHeader(nil, flags, chunkOffsetHole, r.handle, 12)
			h = binary.BigEndian.AppendUint64(h, off)
			rep.segs = append(rep.segs, binary.BigEndian.AppendUint32(h, uint32(len(data))))
			continue
		}
		h := chunkHeader(nil, flags, chunkOffsetData, r.handle, 8+len(data))
		rep.segs = append(rep.segs, binary.BigEndian.AppendUint64(h, off), data)
	}
	return rep
}

// zeroGranule is the hole-detection unit: small enough to find the holes
// of sparse images, large enough to keep the chunk count low.
const zeroGranule = 4096

var zeroPage [zeroGranule]byte

type run struct {
	start, end int
	zero       bool
}

// zeroRuns splits a read buffer starting at export offset off into
// alternating data and all-zero runs, cut at granule boundaries of the
// export. With single set (DF) it returns one run.
func zeroRuns(b []byte, off uint64, single bool) []run {
	var runs []run
	for i := 0; i < len(b); {
		end := min(len(b), i+zeroGranule-int((off+uint64(i))%zeroGranule))
		zero := bytes.Equal(b[i:end], zeroPage[:end-i])
		if n := len(runs); n > 0 && runs[n-1].zero == zero {
			runs[n-1].end = end
		} else {
			runs = append(runs, run{i, end, zero})
		}
		i = end
	}
	if single && len(runs) > 1 {
		return []run{{0, len(b), false}}
	}
	return runs
}

func (c *serverConn) doBlockStatus(r *request) *reply {
	rep := &reply{}
	for i, name := range c.meta {
		exts, err := c.exp.BlockStatus(c.ctx, name, int64(r.off), int64(r.length))
		if err != nil {
			return c.errorReply(r, ErrorCode(err), err.Error())
		}
		exts = normalizeExtents(exts, uint64(r.length), r.flags&cmdFlagReqOne != 0)
		var flags uint16
		if i == len(c.meta)-1 {
			flags = replyFlagDone
		}
		b := chunkHeader(nil, flags, chunkBlockStatus, r.handle, 4+8*len(exts))
		b = binary.BigEndian.AppendUint32(b, uint32(i+1))
		for _, e := range exts {
			b = binary.BigEndian.AppendUint32(b, uint32(e.Length))
			b = binary.BigEndian.AppendUint32(b, e.Flags)
		}
		rep.segs = append(rep.segs, b)
	}
	return rep
}

// normalizeExtents makes a backend's answer fit the wire: merged where
// flags repeat, clamped to the request, at most one with reqOne and at
// most maxExtentsPerChunk otherwise; never empty.
func normalizeExtents(in []Extent, length uint64, reqOne bool) []Extent {
	var out []Extent
	var total uint64
	for _, e := range in {
		e.Length = min(e.Length, length-total)
		if e.Length == 0 {
			continue
		}
		total += e.Length
		if n := len(out); n > 0 && out[n-1].Flags == e.Flags {
			out[n-1].Length += e.Length
		} else if reqOne && n == 1 || n == maxExtentsPerChunk {
			break
		} else {
			out = append(out, e)
		}
		if total == length {
			break
		}
	}
	if len(out) == 0 {
		return []Extent{{Length: length}} // status 0 is always safe (spec)
	}
	return out
}
