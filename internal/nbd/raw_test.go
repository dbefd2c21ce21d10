package nbd

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/testcert"
)

// rawConn is a hand-driven NBD client for feeding servers bad input.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// rawOpTimeout bounds each read or write, not the whole connection: a
// hung server fails the test, while a loaded machine (a 32 MiB payload
// at load 30 took over 5 s) does not.
const rawOpTimeout = 30 * time.Second

func rawDial(t *testing.T, ts *testServer, flags uint32) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", ts.sock)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	h := r.read(18)
	if binary.BigEndian.Uint64(h) != nbdMagic || binary.BigEndian.Uint64(h[8:]) != optMagic ||
		binary.BigEndian.Uint16(h[16:]) != flagFixedNew|flagNoZeroes {
		t.Fatalf("bad greeting %x", h)
	}
	r.write(binary.BigEndian.AppendUint32(nil, flags))
	return r
}

func (r *rawConn) read(n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	r.c.SetDeadline(time.Now().Add(rawOpTimeout))
	if _, err := io.ReadFull(r.br, b); err != nil {
		r.t.Fatalf("read %d: %v", n, err)
	}
	return b
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	r.c.SetDeadline(time.Now().Add(rawOpTimeout))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) opt(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	r.write(append(b, data...))
}

func (r *rawConn) optReply(wantOpt uint32) (uint32, []byte) {
	r.t.Helper()
	h := r.read(20)
	if binary.BigEndian.Uint64(h) != optReplyMagic || binary.BigEndian.Uint32(h[8:]) != wantOpt {
		r.t.Fatalf("bad option reply %x", h)
	}
	return binary.BigEndian.Uint32(h[12:]), r.read(int(binary.BigEndian.Uint32(h[16:])))
}

// expectReply sends an option and checks the final reply type.
func (r *rawConn) expectReply(opt uint32, data []byte, want uint32) [][]byte {
	r.t.Helper()
	r.opt(opt, data)
	var got [][]byte
	for {
		typ, d := r.optReply(opt)
		if typ == want {
			return got
		}
		if typ != repInfo && typ != repServer && typ != repMetaContext {
			r.t.Fatalf("option %d: reply %#x (%s), want %#x", opt, typ, d, want)
		}
		got = append(got, d)
	}
}

func (r *rawConn) expectClosed() {
	r.t.Helper()
	if _, err := io.Copy(io.Discard, r.br); err != nil {
		r.t.Fatalf("connection not closed cleanly: %v", err)
	}
}

func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := append(binary.BigEndian.AppendUint32(nil, uint32(len(name))), name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = append(binary.BigEndian.AppendUint32(b, uint32(len(q))), q...)
	}
	return b
}

func (r *rawConn) req(flags, typ uint16, handle, off uint64, length uint32, payload []byte) {
	r.write(append(requestHeader(nil, flags, typ, handle, off, length), payload...))
}

func (r *rawConn) simple(handle uint64) uint32 {
	r.t.Helper()
	h := r.read(16)
	if binary.BigEndian.Uint32(h) != simpleMagic || binary.BigEndian.Uint64(h[8:]) != handle {
		r.t.Fatalf("bad simple reply %x", h)
	}
	return binary.BigEndian.Uint32(h[4:])
}

type rawChunk struct {
	flags, typ uint16
	data       []byte
}

func (r *rawConn) chunks(handle uint64) []rawChunk {
	r.t.Helper()
	var out []rawChunk
	for {
		h := r.read(20)
		if binary.BigEndian.Uint32(h) != structuredMagic || binary.BigEndian.Uint64(h[8:]) != handle {
			r.t.Fatalf("bad chunk %x", h)
		}
		c := rawChunk{binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:]), r.read(int(binary.BigEndian.Uint32(h[16:])))}
		out = append(out, c)
		if c.flags&replyFlagDone != 0 {
			return out
		}
	}
}

func chunkErrCode(t *testing.T, cs []rawChunk) uint32 {
	t.Helper()
	if len(cs) != 1 || cs[0].typ != chunkError {
		t.Fatalf("want one error chunk, got %+v", cs)
	}
	return binary.BigEndian.Uint32(cs[0].data)
}

func rawServer(t *testing.T, opts ServerOptions) (*testServer, *memExport) {
	exp := filledExport(sparseImage(2 << 20))
	ro := newMemExport(1 << 20)
	ro.ro = true
	return startServer(t, map[string]*memExport{"disk": exp, "ro": ro}, opts), exp
}

func TestRawHandshake(t *testing.T) {
	checkGoroutines(t)
	ts, _ := rawServer(t, ServerOptions{})
	tests := []struct {
		name string
		run  func(r *rawConn)
	}{
		{"unknown option", func(r *rawConn) {
			r.expectReply(42, []byte("x"), repErrUnsup)
			r.expectReply(optList, nil, repAck)
		}},
		{"list with data", func(r *rawConn) { r.expectReply(optList, []byte{1}, repErrInvalid) }},
		{"go malformed", func(r *rawConn) { r.expectReply(optGo, []byte{0, 0, 0, 9, 'a'}, repErrInvalid) }},
		{"go trailing bytes", func(r *rawConn) { r.expectReply(optGo, append(goData("disk"), 0), repErrInvalid) }},
		{"go unknown export", func(r *rawConn) { r.expectReply(optGo, goData("nope"), repErrUnknown) }},
		{"info then abort", func(r *rawConn) {
			infos := r.expectReply(optInfo, goData("disk", infoName, infoDescription), repAck)
			if len(infos) != 4 || string(infos[2][2:]) != "disk" || string(infos[3][2:]) != "mem disk" {
				t.Errorf("infos %q", infos)
			}
			r.expectReply(optAbort, nil, repAck)
			r.expectClosed()
		}},
		{"meta without structured", func(r *rawConn) {
			r.expectReply(optSetMetaCtx, metaData("disk", ContextBaseAllocation), repErrInvalid)
		}},
		{"meta malformed", func(r *rawConn) {
			r.expectReply(optStructuredRepl, nil, repAck)
			r.expectReply(optListMetaCtx, metaData("disk", "base:")[:13], repErrInvalid)
			r.expectReply(optListMetaCtx, metaData("nope"), repErrUnknown)
		}},
		{"meta queries", func(r *rawConn) {
			r.expectReply(optStructuredRepl, nil, repAck)
			for q, want := range map[string]int{"": 2, "base:": 1, "qemu:dirty-bitmap:": 1, "qemu:dirty-bitmap:y": 0} {
				var qs []string
				if q != "" {
					qs = []string{q}
				}
				if got := r.expectReply(optListMetaCtx, metaData("disk", qs...), repAck); len(got) != want {
					t.Errorf("LIST %q: %d contexts, want %d", q, len(got), want)
				}
			}
			set := r.expectReply(optSetMetaCtx, metaData("disk", dirtyContext, "nope:x"), repAck)
			if len(set) != 1 || binary.BigEndian.Uint32(set[0]) == 0 || string(set[0][4:]) != dirtyContext {
				t.Errorf("SET replies %q", set)
			}
		}},
		{"starttls unconfigured", func(r *rawConn) { r.expectReply(optStartTLS, nil, repErrUnsup) }},
		{"too big skipped", func(r *rawConn) {
			r.expectReply(optList, make([]byte, maxOptionLen+1), repErrTooBig)
			r.expectReply(optList, nil, repAck)
		}},
		{"huge closes", func(r *rawConn) {
			r.write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(
				binary.BigEndian.AppendUint64(nil, optMagic), optList), 1<<30))
			r.expectClosed()
		}},
		{"bad option magic", func(r *rawConn) { r.write(make([]byte, 16)); r.expectClosed() }},
		{"truncated option", func(r *rawConn) { r.write(binary.BigEndian.AppendUint64(nil, optMagic)[:5]) }},
		{"export name unknown", func(r *rawConn) { r.opt(optExportName, []byte("nope")); r.expectClosed() }},
		{"export name", func(r *rawConn) {
			r.opt(optExportName, []byte("disk"))
			b := r.read(10)
			if binary.BigEndian.Uint64(b) != 2<<20 || binary.BigEndian.Uint16(b[8:])&FlagHasFlags == 0 {
				t.Errorf("export info %x", b)
			}
			r.req(0, cmdFlush, 1, 0, 0, nil)
			if c := r.simple(1); c != 0 {
				t.Errorf("flush: %d", c)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawDial(t, ts, clientFixedNew|clientNoZeroes)
			r.t = t
			tt.run(r)
		})
	}
	t.Run("unknown client flags", func(t *testing.T) {
		rawDial(t, ts, 1<<7).expectClosed()
	})
	t.Run("zeroes", func(t *testing.T) {
		r := rawDial(t, ts, clientFixedNew)
		r.opt(optExportName, []byte("disk"))
		if b := r.read(134); binary.BigEndian.Uint64(b) != 2<<20 {
			t.Errorf("export info %x", b)
		}
	})
}

func TestRawRequireTLS(t *testing.T) {
	checkGoroutines(t)
	pki := testcert.New(t)
	ts, _ := rawServer(t, ServerOptions{TLSConfig: pki.ServerTLS(), RequireTLS: true})
	r := rawDial(t, ts, clientFixedNew|clientNoZeroes)
	for _, o := range []uint32{optList, optInfo, optGo, optStructuredRepl, optListMetaCtx, 42} {
		r.expectReply(o, nil, repErrTLSReqd)
	}
	r.expectReply(optAbort, nil, repAck)
	r.expectClosed()
	r = rawDial(t, ts, clientFixedNew|clientNoZeroes)
	r.opt(optExportName, []byte("disk"))
	r.expectClosed()
}

// transmission negotiates GO on disk, optionally with structured replies
// and both meta contexts.
func transmission(t *testing.T, ts *testServer, export string, structured bool) *rawConn {
	r := rawDial(t, ts, clientFixedNew|clientNoZeroes)
	if structured {
		r.expectReply(optStructuredRepl, nil, repAck)
		r.expectReply(optSetMetaCtx, metaData(export, ContextBaseAllocation, dirtyContext), repAck)
	}
	r.expectReply(optGo, goData(export), repAck)
	return r
}

func TestRawTransmissionSimple(t *testing.T) {
	checkGoroutines(t)
	ts, exp := rawServer(t, ServerOptions{})
	r := transmission(t, ts, "disk", false)
	ro := transmission(t, ts, "ro", false)
	max := uint32(DefaultMaxPayload)
	tests := []struct {
		name       string
		c          *rawConn
		flags, typ uint16
		off        uint64
		length     uint32
		payload    []byte
		want       uint32
	}{
		{"unknown command", r, 0, 99, 0, 0, nil, EINVAL},
		{"unknown flag", r, 1 << 9, cmdFlush, 0, 0, nil, EINVAL},
		{"DF without structured", r, cmdFlagDF, cmdRead, 0, 512, nil, EINVAL},
		{"req-one on write", r, cmdFlagReqOne, cmdWrite, 0, 4, []byte{1, 2, 3, 4}, EINVAL},
		{"read past end", r, 0, cmdRead, 2<<20 - 1, 2, nil, EINVAL},
		{"read offset overflow", r, 0, cmdRead, 1<<64 - 1, 2, nil, EINVAL},
		{"read too long", r, 0, cmdRead, 0, max + 1, nil, EINVAL},
		{"write past end", r, 0, cmdWrite, 2 << 20, 4, []byte{1, 2, 3, 4}, ENOSPC},
		{"write too long", r, 0, cmdWrite, 0, max + 1, make([]byte, max+1), EINVAL},
		{"zero past end", r, 0, cmdWriteZeroes, 2<<20 - 4, 8, nil, ENOSPC},
		{"trim past end", r, 0, cmdTrim, 2<<20 - 4, 8, nil, EINVAL},
		{"block status unstructured", r, 0, cmdBlockStatus, 0, 512, nil, EINVAL},
		{"cache", r, 0, cmdCache, 0, 4096, nil, 0},
		{"write read-only", ro, 0, cmdWrite, 0, 4, []byte{1, 2, 3, 4}, EPERM},
		{"zero read-only", ro, 0, cmdWriteZeroes, 0, 4, nil, EPERM},
		{"trim read-only", ro, 0, cmdTrim, 0, 4, nil, EPERM},
		{"flush read-only", ro, 0, cmdFlush, 0, 0, nil, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.t = t
			tt.c.req(tt.flags, tt.typ, uint64(i), tt.off, tt.length, tt.payload)
			if got := tt.c.simple(uint64(i)); got != tt.want {
				t.Fatalf("error %d, want %d", got, tt.want)
			}
		})
	}
	r.t = t
	r.req(0, cmdRead, 7, 0, 4096, nil)
	if r.simple(7) != 0 || string(r.read(4096)) != string(exp.bytes()[:4096]) {
		t.Fatal("simple read after errors")
	}
	r.req(0, cmdWrite, 8, 0, 2*max+1, nil) // unskippable: server hangs up
	r.expectClosed()
}

func TestRawTransmissionStructured(t *testing.T) {
	checkGoroutines(t)
	ts, exp := rawServer(t, ServerOptions{})
	r := transmission(t, ts, "disk", true)
	r.req(cmdFlagFUA, cmdRead, 1, 2<<20-1, 2, nil)
	if c := chunkErrCode(t, r.chunks(1)); c != EINVAL {
		t.Fatalf("read past end: %d", c)
	}
	r.req(1<<9, cmdRead, 2, 0, 2, nil)
	if c := chunkErrCode(t, r.chunks(2)); c != EINVAL {
		t.Fatalf("read bad flag: %d", c)
	}
	// [0,64K) data, [64K,1M) zero, 512 zero bytes, 3000 data bytes.
	r.req(0, cmdRead, 3, 0, 1<<20+4096, nil)
	cs := r.chunks(3)
	types := []uint16{}
	for _, c := range cs {
		types = append(types, c.typ)
	}
	if len(cs) != 3 || cs[1].typ != chunkOffsetHole || binary.BigEndian.Uint64(cs[1].data) != 64<<10 ||
		binary.BigEndian.Uint32(cs[1].data[8:]) != 1<<20-64<<10 || cs[2].typ != chunkOffsetData {
		t.Fatalf("sparse read chunks %v", types)
	}
	if string(cs[2].data[8:]) != string(exp.bytes()[1<<20:1<<20+4096]) {
		t.Fatal("data chunk content")
	}
	r.req(cmdFlagDF, cmdRead, 4, 0, 1<<20, nil)
	if cs := r.chunks(4); len(cs) != 1 || cs[0].typ != chunkOffsetData || len(cs[0].data) != 8+1<<20 {
		t.Fatalf("DF read: %d chunks", len(cs))
	}
	r.req(0, cmdRead, 5, 64<<10, 8192, nil)
	if cs := r.chunks(5); len(cs) != 1 || cs[0].typ != chunkOffsetHole {
		t.Fatalf("zero read: %+v", cs)
	}
	r.req(cmdFlagReqOne, cmdBlockStatus, 6, 0, 2<<20, nil)
	cs = r.chunks(6)
	if len(cs) != 2 || cs[0].typ != chunkBlockStatus || len(cs[0].data) != 12 || len(cs[1].data) != 12 {
		t.Fatalf("REQ_ONE block status: %+v", cs)
	}
	// All allocated; the dirty bitmap alternates every 64 KiB.
	if l := binary.BigEndian.Uint32(cs[0].data[4:]); l != 2<<20 {
		t.Fatalf("REQ_ONE allocation extent %d", l)
	}
	if l, f := binary.BigEndian.Uint32(cs[1].data[4:]), binary.BigEndian.Uint32(cs[1].data[8:]); l != 64<<10 || f != StateDirty {
		t.Fatalf("REQ_ONE dirty extent %d/%d", l, f)
	}
	r.req(0, cmdBlockStatus, 7, 0, 0, nil)
	if c := chunkErrCode(t, r.chunks(7)); c != EINVAL {
		t.Fatalf("empty block status: %d", c)
	}
	r.req(0, cmdWrite, 8, 0, 4, []byte{1, 2, 3, 4})
	if r.simple(8) != 0 {
		t.Fatal("write")
	}
	r.req(0, cmdDisc, 9, 0, 0, nil)
	r.expectClosed()
}

func TestRawBadRequests(t *testing.T) {
	checkGoroutines(t)
	ts, _ := rawServer(t, ServerOptions{})
	t.Run("bad magic", func(t *testing.T) {
		r := transmission(t, ts, "disk", false)
		r.write(make([]byte, requestHeaderLen))
		r.expectClosed()
	})
	t.Run("vanish mid write", func(t *testing.T) {
		r := transmission(t, ts, "disk", false)
		r.req(0, cmdWrite, 1, 0, 1<<20, make([]byte, 1000))
		r.c.Close()
	})
	t.Run("vanish with replies pending", func(t *testing.T) {
		r := transmission(t, ts, "disk", true)
		for i := range 64 {
			r.req(0, cmdRead, uint64(i), 0, 1<<20, nil)
		}
		r.c.Close()
	})
	t.Run("truncated header", func(t *testing.T) {
		r := transmission(t, ts, "disk", false)
		r.write(requestHeader(nil, 0, cmdRead, 1, 0, 512)[:13])
		r.c.Close()
	})
}
