package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
)

// maxChunkLen bounds a structured chunk we accept: the largest read
// payload plus its offset, or a full BLOCK_STATUS chunk.
const maxChunkLen = DefaultMaxPayload + 8

func (c *Client) readChunk() error {
	var b [16]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return err
	}
	flags, typ := binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:])
	h, n := binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint32(b[12:])
	if n > maxChunkLen {
		return fmt.Errorf("%w: chunk of %d bytes", ErrProtocol, n)
	}
	cl, err := c.take(h)
	if err != nil {
		return err
	}
	if err := c.chunk(cl, typ, n); err != nil {
		return err // cl is still pending: fail finishes it
	}
	if flags&replyFlagDone != 0 {
		c.forget(h)
		cl.finish(cl.check())
	}
	return nil
}

// check validates a completed reply: a successful read covered every
// byte, a block status carried our context.
func (cl *call) check() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch {
	case cl.err != nil:
		return cl.err
	case cl.typ == cmdRead && cl.covered != uint64(cl.length):
		return fmt.Errorf("%w: read reply covered %d of %d bytes", ErrProtocol, cl.covered, cl.length)
	case cl.typ == cmdBlockStatus && !cl.gotStatus:
		return fmt.Errorf("%w: block status reply without the context", ErrProtocol)
	}
	return nil
}

func (c *Client) chunk(cl *call, typ uint16, n uint32) error {
	switch {
	case typ == chunkNone:
		if n != 0 {
			return fmt.Errorf("%w: NONE chunk with payload", ErrProtocol)
		}
		return nil
	case typ == chunkOffsetData && cl.typ == cmdRead && n >= 8:
		off, err := c.readU64()
		if err != nil {
			return err
		}
		return c.deliver(cl, off, int(n-8), false)
	case typ == chunkOffsetHole && cl.typ == cmdRead && n == 12:
		var b [12]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		return c.deliver(cl, binary.BigEndian.Uint64(b[:]), int(binary.BigEndian.Uint32(b[8:])), true)
	case typ == chunkBlockStatus && cl.typ == cmdBlockStatus && n >= 12 && (n-4)%8 == 0:
		return c.blockStatusChunk(cl, n)
	case typ&(1<<15) != 0 && n >= 6:
		return c.errorChunk(cl, typ, n)
	}
	return fmt.Errorf("%w: unexpected chunk type %d (%d bytes) for command %d", ErrProtocol, typ, n, cl.typ)
}

func (c *Client) readU64() (uint64, error) {
	var b [8]byte
	_, err := io.ReadFull(c.br, b[:])
	return binary.BigEndian.Uint64(b[:]), err
}

func (c *Client) payload(n uint32) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c.br, b)
	return b, err
}

func (c *Client) blockStatusChunk(cl *call, n uint32) error {
	b, err := c.payload(n)
	if err != nil {
		return err
	}
	if binary.BigEndian.Uint32(b) != cl.ctxID {
		return nil // another negotiated context: not asked for
	}
	exts := make([]Extent, 0, (n-4)/8)
	var total uint64
	for d := b[4:]; len(d) >= 8; d = d[8:] {
		e := Extent{Length: uint64(binary.BigEndian.Uint32(d)), Flags: binary.BigEndian.Uint32(d[4:])}
		total += e.Length
		if e.Length == 0 {
			return fmt.Errorf("%w: empty extent", ErrProtocol)
		}
		exts = append(exts, e)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if total > uint64(cl.length) {
		// Allowed to servers (final extent past the request); clamp.
		exts[len(exts)-1].Length -= total - uint64(cl.length)
		if exts[len(exts)-1].Length == 0 {
			exts = exts[:len(exts)-1]
		}
	}
	cl.extents, cl.gotStatus = exts, len(exts) > 0
	return nil
}

func (c *Client) errorChunk(cl *call, typ uint16, n uint32) error {
	b, err := c.payload(n)
	if err != nil {
		return err
	}
	code, mlen := binary.BigEndian.Uint32(b), int(binary.BigEndian.Uint16(b[4:]))
	if mlen > len(b)-6 || (typ == chunkErrorOffset && len(b)-6-mlen != 8) {
		return fmt.Errorf("%w: malformed error chunk", ErrProtocol)
	}
	if code == 0 {
		code = EIO // an error chunk must carry an error
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.err == nil {
		cl.err = &Error{Code: code, Message: string(b[6 : 6+mlen])}
	}
	return nil
}
