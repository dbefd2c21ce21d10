package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// optReply is one option reply received during the client handshake.
type optReply struct {
	typ  uint32
	data []byte
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.bw.Write(b)
	c.bw.Write(data)
	return c.bw.Flush()
}

func (c *Client) readOptReply(opt uint32) (optReply, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return optReply{}, fmt.Errorf("nbd: reading option reply: %w", err)
	}
	n := binary.BigEndian.Uint32(h[16:])
	if binary.BigEndian.Uint64(h[0:]) != optReplyMagic || binary.BigEndian.Uint32(h[8:]) != opt || n > maxOptionLen {
		return optReply{}, fmt.Errorf("%w: bad option reply header", ErrProtocol)
	}
	r := optReply{typ: binary.BigEndian.Uint32(h[12:]), data: make([]byte, n)}
	if _, err := io.ReadFull(c.br, r.data); err != nil {
		return optReply{}, fmt.Errorf("nbd: reading option reply: %w", err)
	}
	return r, nil
}

// optError turns an error reply into a Go error.
func optError(opt uint32, r optReply) error {
	switch r.typ {
	case repErrTLSReqd:
		return fmt.Errorf("%w (option %d): %s", ErrTLSRequired, opt, r.data)
	case repErrUnknown:
		return fmt.Errorf("%w (option %d): %s", ErrUnknownExport, opt, r.data)
	case repErrUnsup:
		return fmt.Errorf("%w: option %d: %s", ErrNotSupported, opt, r.data)
	}
	return fmt.Errorf("nbd: option %d refused (reply %#x): %s", opt, r.typ, r.data)
}

// simpleOption sends an option without data expecting a plain ACK.
func (c *Client) simpleOption(opt uint32) error {
	if err := c.sendOption(opt, nil); err != nil {
		return fmt.Errorf("nbd: sending option: %w", err)
	}
	r, err := c.readOptReply(opt)
	if err != nil {
		return err
	}
	if r.typ != repAck {
		return optError(opt, r)
	}
	return nil
}

func (c *Client) handshake(ctx context.Context, u *URI, opts *ClientOptions) error {
	stop := context.AfterFunc(ctx, func() { c.raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	noZeroes, err := c.hello()
	if err != nil {
		return err
	}
	if u.TLS {
		if err := c.startTLS(ctx, u, opts); err != nil {
			return err
		}
	}
	switch err := c.simpleOption(optStructuredRepl); {
	case err == nil:
		c.structured = true
	case errors.Is(err, ErrTLSRequired), errors.Is(err, ErrProtocol):
		return err
	}
	if c.structured && len(opts.MetaContexts) > 0 {
		if err := c.setMetaContexts(u.Export, opts.MetaContexts); err != nil {
			return err
		}
	}
	err = c.optGo(u.Export)
	if errors.Is(err, ErrNotSupported) {
		return c.exportName(u.Export, noZeroes)
	}
	return err
}

// hello reads the server greeting and answers with our flags.
func (c *Client) hello() (noZeroes bool, err error) {
	var h [18]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return false, fmt.Errorf("nbd: reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != nbdMagic || binary.BigEndian.Uint64(h[8:]) != optMagic {
		return false, fmt.Errorf("%w: not a newstyle NBD server", ErrProtocol)
	}
	sf := binary.BigEndian.Uint16(h[16:])
	if sf&flagFixedNew == 0 {
		return false, fmt.Errorf("%w: server lacks fixed newstyle", ErrProtocol)
	}
	cf := uint32(clientFixedNew)
	if sf&flagNoZeroes != 0 {
		cf |= clientNoZeroes
	}
	c.bw.Write(binary.BigEndian.AppendUint32(nil, cf))
	if err := c.bw.Flush(); err != nil {
		return false, fmt.Errorf("nbd: sending flags: %w", err)
	}
	return cf&clientNoZeroes != 0, nil
}

func (c *Client) startTLS(ctx context.Context, u *URI, opts *ClientOptions) error {
	if err := c.simpleOption(optStartTLS); err != nil {
		return fmt.Errorf("nbd: STARTTLS: %w", err)
	}
	cfg := &tls.Config{}
	if opts.TLSConfig != nil {
		cfg = opts.TLSConfig.Clone()
	}
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS13)
	if cfg.ServerName == "" {
		cfg.ServerName = u.Host
	}
	tc := tls.Client(c.raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nbd: TLS handshake: %w", err)
	}
	c.br = bufio.NewReaderSize(tc, 64<<10)
	c.bw = bufio.NewWriterSize(tc, 64<<10)
	c.conn = tc
	return nil
}

func (c *Client) setMetaContexts(export string, names []string) error {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(names)))
	for _, n := range names {
		b = append(binary.BigEndian.AppendUint32(b, uint32(len(n))), n...)
	}
	if err := c.sendOption(optSetMetaCtx, b); err != nil {
		return fmt.Errorf("nbd: sending option: %w", err)
	}
	for {
		r, err := c.readOptReply(optSetMetaCtx)
		switch {
		case err != nil:
			return err
		case r.typ == repAck:
			return nil
		case r.typ&repErrBit != 0:
			// Not fatal: BlockStatus will report the context unknown.
			return nil
		case r.typ == repMetaContext && len(r.data) >= 4:
			c.contexts[string(r.data[4:])] = binary.BigEndian.Uint32(r.data)
		default:
			return fmt.Errorf("%w: unexpected reply %d to SET_META_CONTEXT", ErrProtocol, r.typ)
		}
	}
}

func (c *Client) optGo(export string) error {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, infoBlockSize)
	if err := c.sendOption(optGo, b); err != nil {
		return fmt.Errorf("nbd: sending option: %w", err)
	}
	gotExport := false
	for {
		r, err := c.readOptReply(optGo)
		switch {
		case err != nil:
			return err
		case r.typ == repAck && gotExport:
			return nil
		case r.typ&repErrBit != 0:
			return optError(optGo, r)
		case r.typ == repInfo:
			gotExport = c.parseInfo(r.data) || gotExport
		default:
			return fmt.Errorf("%w: unexpected reply %d to GO", ErrProtocol, r.typ)
		}
	}
}

// parseInfo records an NBD_REP_INFO; it reports whether it was the
// mandatory NBD_INFO_EXPORT.
func (c *Client) parseInfo(d []byte) bool {
	if len(d) < 2 {
		return false
	}
	switch binary.BigEndian.Uint16(d) {
	case infoExport:
		if len(d) == 12 {
			c.size = int64(binary.BigEndian.Uint64(d[2:]) & (1<<63 - 1))
			c.flags = binary.BigEndian.Uint16(d[10:])
			return true
		}
	case infoBlockSize:
		if len(d) == 14 {
			c.sizes = BlockSizes{
				Minimum:   binary.BigEndian.Uint32(d[2:]),
				Preferred: binary.BigEndian.Uint32(d[6:]),
				Maximum:   binary.BigEndian.Uint32(d[10:]),
			}
		}
	}
	return false
}

func (c *Client) exportName(export string, noZeroes bool) error {
	if err := c.sendOption(optExportName, []byte(export)); err != nil {
		return fmt.Errorf("nbd: sending option: %w", err)
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		return fmt.Errorf("nbd: EXPORT_NAME %q refused: %w", export, err)
	}
	c.size = int64(binary.BigEndian.Uint64(b) & (1<<63 - 1))
	c.flags = binary.BigEndian.Uint16(b[8:])
	return nil
}
