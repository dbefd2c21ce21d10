package nbd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// serveFuzz runs one server connection over a pipe fed with input and
// fails if it does not end soon after the input does.
func serveFuzz(t *testing.T, input []byte) {
	exps := &memExporter{exports: map[string]*memExport{"": newMemExport(64 << 10), "disk": newMemExport(1 << 20)}}
	s := NewServer(exps, ServerOptions{HandshakeTimeout: 2 * time.Second, Workers: 4})
	srv, cli := net.Pipe()
	c := newServerConn(s, srv)
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, cli); close(drained) }()
	cli.SetWriteDeadline(time.Now().Add(2 * time.Second))
	cli.Write(input)
	cli.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("server connection did not end")
	}
	<-drained
}

func fuzzOption(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

var clientFlags = []byte{0, 0, 0, clientFixedNew | clientNoZeroes}

// goodHandshake is a complete negotiation ending in GO for "disk".
func goodHandshake() []byte {
	b := append([]byte{}, clientFlags...)
	b = append(b, fuzzOption(optStructuredRepl, nil)...)
	b = append(b, fuzzOption(optSetMetaCtx, metaData("disk", ContextBaseAllocation, dirtyContext))...)
	return append(b, fuzzOption(optGo, goData("disk", infoBlockSize))...)
}

func FuzzServerOptions(f *testing.F) {
	f.Add(goodHandshake())
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(optList, nil)...))
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(optExportName, []byte("disk"))...))
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(optInfo, []byte{0, 0, 0, 200})...))
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(optListMetaCtx, metaData("disk", "base:"))...))
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(optStartTLS, nil)...))
	f.Add(append(append([]byte{}, clientFlags...), fuzzOption(99, []byte{1, 2, 3})...))
	f.Add([]byte{0, 0, 0, 1, 'I', 'H'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) { serveFuzz(t, b) })
}

func FuzzServerRequests(f *testing.F) {
	f.Add(requestHeader(nil, 0, cmdRead, 1, 0, 4096))
	f.Add(append(requestHeader(nil, cmdFlagFUA, cmdWrite, 2, 512, 4), 1, 2, 3, 4))
	f.Add(requestHeader(nil, cmdFlagReqOne, cmdBlockStatus, 3, 0, 1<<20))
	f.Add(requestHeader(nil, cmdFlagNoHole|cmdFlagFastZero, cmdWriteZeroes, 4, 0, 8192))
	f.Add(requestHeader(nil, cmdFlagDF, cmdRead, 5, 1<<20-1, 2))
	f.Add(requestHeader(nil, 0, cmdWrite, 6, 0, 1<<31))
	f.Add(append(requestHeader(nil, 0, cmdFlush, 7, 0, 0), requestHeader(nil, 0, cmdDisc, 8, 0, 0)...))
	f.Add(requestHeader(nil, 0xffff, 0xffff, 9, 1<<63, 0xffffffff))
	f.Fuzz(func(t *testing.T, b []byte) { serveFuzz(t, append(goodHandshake(), b...)) })
}

// fakeServerHandshake answers a Client's negotiation with a scripted
// server: structured replies, base:allocation as context 1, a 1 MiB export.
func fakeServerHandshake(nc net.Conn) error {
	hello := binary.BigEndian.AppendUint64(nil, nbdMagic)
	hello = binary.BigEndian.AppendUint64(hello, optMagic)
	hello = binary.BigEndian.AppendUint16(hello, flagFixedNew|flagNoZeroes)
	if _, err := nc.Write(hello); err != nil {
		return err
	}
	if _, err := io.ReadFull(nc, make([]byte, 4)); err != nil {
		return err
	}
	for {
		h := make([]byte, 16)
		if _, err := io.ReadFull(nc, h); err != nil {
			return err
		}
		opt := binary.BigEndian.Uint32(h[8:])
		if _, err := io.ReadFull(nc, make([]byte, binary.BigEndian.Uint32(h[12:]))); err != nil {
			return err
		}
		var replies [][]byte
		switch opt {
		case optSetMetaCtx:
			replies = append(replies, fakeOptReply(opt, repMetaContext, append([]byte{0, 0, 0, 1}, ContextBaseAllocation...)))
		case optGo:
			info := binary.BigEndian.AppendUint16(nil, infoExport)
			info = binary.BigEndian.AppendUint64(info, 1<<20)
			info = binary.BigEndian.AppendUint16(info, FlagHasFlags|FlagSendFlush)
			replies = append(replies, fakeOptReply(opt, repInfo, info))
		}
		replies = append(replies, fakeOptReply(opt, repAck, nil))
		for _, r := range replies {
			if _, err := nc.Write(r); err != nil {
				return err
			}
		}
		if opt == optGo {
			return nil
		}
	}
}

func fakeOptReply(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func chunkBytes(flags, typ uint16, handle uint64, payload []byte) []byte {
	return append(chunkHeader(nil, flags, typ, handle, len(payload)), payload...)
}

func FuzzClientReplies(f *testing.F) {
	simple := binary.BigEndian.AppendUint32(nil, simpleMagic)
	simple = binary.BigEndian.AppendUint32(simple, 0)
	f.Add(append(binary.BigEndian.AppendUint64(simple, 1), make([]byte, 4096)...))
	data := binary.BigEndian.AppendUint64(nil, 0)
	f.Add(chunkBytes(replyFlagDone, chunkOffsetData, 1, append(data, make([]byte, 4096)...)))
	hole := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 0), 4096)
	f.Add(chunkBytes(replyFlagDone, chunkOffsetHole, 2, hole))
	bs := []byte{0, 0, 0, 1, 0, 0, 16, 0, 0, 0, 0, 3}
	f.Add(chunkBytes(replyFlagDone, chunkBlockStatus, 2, bs))
	f.Add(chunkBytes(replyFlagDone, chunkError, 3, []byte{0, 0, 0, 5, 0, 2, 'h', 'i'}))
	f.Add(chunkBytes(replyFlagDone, chunkErrorOffset, 1, []byte{0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(chunkBytes(0, chunkOffsetHole, 1, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 1<<63), 1<<31)))
	f.Add(chunkBytes(replyFlagDone, chunkNone, 77, nil))
	f.Add([]byte{0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		srv, cli := net.Pipe()
		defer srv.Close()
		go func() {
			if fakeServerHandshake(srv) != nil {
				return
			}
			go io.Copy(io.Discard, srv)
			srv.Write(b)
			srv.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := newClient(ctx, cli, &URI{}, &ClientOptions{MetaContexts: []string{ContextBaseAllocation}})
		if err != nil {
			t.Fatalf("handshake with fake server: %v", err)
		}
		done := make(chan struct{}, 3)
		go func() { c.ReadAt(ctx, make([]byte, 4096), 0); done <- struct{}{} }()
		go func() { c.BlockStatus(ctx, ContextBaseAllocation, 0, 4096, false); done <- struct{}{} }()
		go func() { c.Flush(ctx); done <- struct{}{} }()
		for range 3 {
			<-done
		}
		if ctx.Err() != nil {
			t.Fatal("client requests hung")
		}
		c.Close()
	})
}
