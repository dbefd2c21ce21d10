package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"strings"
)

type optResult int

const (
	optContinue optResult = iota
	optTransmit
	optClose
)

// handshake runs the fixed newstyle negotiation; it reports whether the
// connection goes on to transmission with c.exp set.
func (c *serverConn) handshake() bool {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNew|flagNoZeroes)
	if _, err := c.bw.Write(hello[:]); err != nil || c.bw.Flush() != nil {
		return false
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(clientFixedNew|clientNoZeroes) != 0 {
		c.log.Debug("nbd: unknown client flags", "flags", flags)
		return false
	}
	c.noZeroes = flags&clientNoZeroes != 0
	for {
		switch c.nextOption() {
		case optTransmit:
			return true
		case optClose:
			return false
		}
	}
}

func (c *serverConn) nextOption() optResult {
	var h [16]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return optClose
	}
	if binary.BigEndian.Uint64(h[0:]) != optMagic {
		c.log.Debug("nbd: bad option magic")
		return optClose
	}
	opt, n := binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
	if n > maxOptionLen {
		// Too big to be sane; skip it if cheap, else give up.
		if opt == optExportName || n > 16*maxOptionLen || discard(c.br, int64(n)) != nil {
			return optClose
		}
		return c.replyErr(opt, repErrTooBig, "option data too large")
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return optClose
	}
	return c.option(opt, data)
}

func (c *serverConn) option(opt uint32, data []byte) optResult {
	if c.s.opts.RequireTLS && !c.tlsUp && opt != optStartTLS && opt != optAbort {
		if opt == optExportName {
			return optClose // no way to report an error to EXPORT_NAME
		}
		return c.replyErr(opt, repErrTLSReqd, "TLS required")
	}
	switch opt {
	case optExportName:
		return c.optExportName(data)
	case optAbort:
		c.reply(opt, repAck, nil)
		return optClose
	case optList:
		return c.optList(data)
	case optStartTLS:
		return c.optStartTLS(data)
	case optInfo, optGo:
		return c.optInfoGo(opt, data)
	case optStructuredRepl:
		if len(data) != 0 {
			return c.replyErr(opt, repErrInvalid, "no data expected")
		}
		c.structured = true
		return c.reply(opt, repAck, nil)
	case optListMetaCtx, optSetMetaCtx:
		return c.optMeta(opt, data)
	}
	return c.replyErr(opt, repErrUnsup, "unsupported option")
}

// reply sends one option reply; a failed write ends the connection.
func (c *serverConn) reply(opt, typ uint32, data []byte) optResult {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], optReplyMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	c.bw.Write(h[:])
	c.bw.Write(data)
	if err := c.bw.Flush(); err != nil {
		return optClose
	}
	return optContinue
}

func (c *serverConn) replyErr(opt, typ uint32, msg string) optResult {
	c.log.Debug("nbd: option refused", "option", opt, "reply", typ&^repErrBit, "msg", msg)
	return c.reply(opt, typ, []byte(msg))
}

func (c *serverConn) optList(data []byte) optResult {
	if len(data) != 0 {
		return c.replyErr(optList, repErrInvalid, "no data expected")
	}
	list, err := c.s.exp.List(c.ctx)
	if err != nil {
		return c.replyErr(optList, repErrPolicy, err.Error())
	}
	for _, e := range list {
		if c.authorize(e.Name) != nil {
			continue // a client sees only what it may open
		}
		b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
		b = append(append(b, e.Name...), e.Description...)
		if c.reply(optList, repServer, b) == optClose {
			return optClose
		}
	}
	return c.reply(optList, repAck, nil)
}

func (c *serverConn) optStartTLS(data []byte) optResult {
	switch {
	case len(data) != 0:
		return c.replyErr(optStartTLS, repErrInvalid, "no data expected")
	case c.tlsUp:
		return c.replyErr(optStartTLS, repErrInvalid, "TLS already negotiated")
	case c.s.opts.TLSConfig == nil:
		return c.replyErr(optStartTLS, repErrUnsup, "TLS not configured")
	}
	if c.reply(optStartTLS, repAck, nil) == optClose || c.br.Buffered() != 0 {
		return optClose // bytes before the TLS handshake would be unprotected
	}
	cfg := c.s.opts.TLSConfig.Clone()
	cfg.MinVersion = tls.VersionTLS13
	tc := tls.Server(c.raw, cfg)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		c.log.Debug("nbd: TLS handshake failed", "err", err)
		return optClose
	}
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.w = tc
	st := tc.ConnectionState()
	c.tlsState = &st
	// Negotiated state does not survive the switch to TLS (spec).
	c.tlsUp, c.structured, c.meta, c.metaExport = true, false, nil, ""
	return optContinue
}

// authorize asks ServerOptions.Authorize whether this connection may
// open or see export name.
func (c *serverConn) authorize(name string) error {
	if c.s.opts.Authorize == nil {
		return nil
	}
	return c.s.opts.Authorize(c.ctx, c.tlsState, name)
}

// openExport maps Exporter.Open failures to option error replies.
func (c *serverConn) openExport(opt uint32, name string) (Export, optResult) {
	if err := c.authorize(name); err != nil {
		c.log.Info("nbd: export refused", "export", name, "err", err)
		return nil, c.replyErr(opt, repErrPolicy, "not authorized for this export")
	}
	exp, err := c.s.exp.Open(c.ctx, name)
	if err == nil {
		return exp, optContinue
	}
	switch {
	case c.isStopping():
		return nil, c.replyErr(opt, repErrShutdown, "server shutting down")
	case errors.Is(err, ErrUnknownExport):
		return nil, c.replyErr(opt, repErrUnknown, err.Error())
	}
	return nil, c.replyErr(opt, repErrPolicy, err.Error())
}

func (c *serverConn) optExportName(data []byte) optResult {
	if err := c.authorize(string(data)); err != nil {
		c.log.Info("nbd: export refused", "export", string(data), "err", err)
		return optClose // EXPORT_NAME cannot carry an error
	}
	exp, err := c.s.exp.Open(c.ctx, string(data))
	if err != nil {
		c.log.Debug("nbd: EXPORT_NAME failed", "err", err)
		return optClose
	}
	c.setExport(string(data), exp)
	b := binary.BigEndian.AppendUint64(nil, c.size)
	b = binary.BigEndian.AppendUint16(b, c.flags)
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	c.bw.Write(b)
	if c.bw.Flush() != nil {
		exp.Close()
		return optClose
	}
	return optTransmit
}

// setExport fixes what transmission needs from the chosen export.
func (c *serverConn) setExport(name string, exp Export) {
	c.exp, c.name = exp, name
	c.size = uint64(max(exp.Size(), 0))
	c.sizes = exp.BlockSizes()
	c.maxPay = c.sizes.Maximum
	if c.maxPay == 0 || c.maxPay > DefaultMaxPayload {
		c.maxPay = DefaultMaxPayload
	}
	c.flags = transmissionFlags(exp, c.structured)
	if c.metaExport != name {
		c.meta = nil // contexts were chosen for another export
	}
}

func transmissionFlags(exp Export, structured bool) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache
	if exp.ReadOnly() {
		f |= FlagReadOnly
	} else {
		f |= FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if structured {
		f |= FlagSendDF
	}
	if exp.MultiConn() {
		f |= FlagCanMultiConn
	}
	return f
}

// parseInfoRequest splits NBD_OPT_INFO/GO data: name and info types.
func parseInfoRequest(data []byte) (string, []uint16, bool) {
	if len(data) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n)+6 > uint64(len(data)) {
		return "", nil, false
	}
	name, rest := string(data[4:4+n]), data[4+n:]
	cnt := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*cnt {
		return "", nil, false
	}
	infos := make([]uint16, cnt)
	for i := range infos {
		infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, infos, true
}

func (c *serverConn) optInfoGo(opt uint32, data []byte) optResult {
	name, infos, ok := parseInfoRequest(data)
	if !ok {
		return c.replyErr(opt, repErrInvalid, "malformed request")
	}
	exp, res := c.openExport(opt, name)
	if exp == nil {
		return res
	}
	prevMeta := c.meta
	c.setExport(name, exp)
	if c.sendInfos(opt, name, infos) == optClose || c.reply(opt, repAck, nil) == optClose {
		exp.Close()
		return optClose
	}
	if opt == optGo {
		return optTransmit
	}
	c.exp, c.meta = nil, prevMeta // INFO changes nothing
	exp.Close()
	return optContinue
}

func (c *serverConn) sendInfos(opt uint32, name string, infos []uint16) optResult {
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, c.size)
	b = binary.BigEndian.AppendUint16(b, c.flags)
	if c.reply(opt, repInfo, b) == optClose {
		return optClose
	}
	// Block sizes go out unasked: clients that did not ask may ignore them.
	b = binary.BigEndian.AppendUint16(nil, infoBlockSize)
	min := max(c.sizes.Minimum, 1)
	b = binary.BigEndian.AppendUint32(b, min)
	b = binary.BigEndian.AppendUint32(b, max(c.sizes.Preferred, min))
	b = binary.BigEndian.AppendUint32(b, c.maxPay)
	if c.reply(opt, repInfo, b) == optClose {
		return optClose
	}
	for _, t := range infos {
		var b []byte
		switch t {
		case infoName:
			b = append(binary.BigEndian.AppendUint16(nil, infoName), name...)
		case infoDescription:
			b = append(binary.BigEndian.AppendUint16(nil, infoDescription), c.description(name)...)
		default:
			continue
		}
		if c.reply(opt, repInfo, b) == optClose {
			return optClose
		}
	}
	return optContinue
}

func (c *serverConn) description(name string) string {
	list, err := c.s.exp.List(c.ctx)
	if err != nil {
		return ""
	}
	for _, e := range list {
		if e.Name == name {
			return e.Description
		}
	}
	return ""
}

// parseMetaRequest splits LIST/SET_META_CONTEXT data: export and queries.
func parseMetaRequest(data []byte) (string, []string, bool) {
	str := func() (string, bool) {
		if len(data) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(data)
		if n > maxStringLen || int(n) > len(data)-4 {
			return "", false
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, true
	}
	name, ok := str()
	if !ok || len(data) < 4 {
		return "", nil, false
	}
	cnt := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(cnt)*4 > uint64(len(data)) {
		return "", nil, false
	}
	queries := make([]string, 0, cnt)
	for range cnt {
		q, ok := str()
		if !ok {
			return "", nil, false
		}
		queries = append(queries, q)
	}
	return name, queries, len(data) == 0
}

func (c *serverConn) optMeta(opt uint32, data []byte) optResult {
	if !c.structured {
		return c.replyErr(opt, repErrInvalid, "structured replies not negotiated")
	}
	name, queries, ok := parseMetaRequest(data)
	if !ok {
		return c.replyErr(opt, repErrInvalid, "malformed request")
	}
	exp, res := c.openExport(opt, name)
	if exp == nil {
		return res
	}
	defer exp.Close()
	names := matchContexts(exp, queries, opt == optListMetaCtx)
	if opt == optSetMetaCtx {
		c.meta, c.metaExport = names, name
	}
	for i, n := range names {
		id := uint32(0) // LIST replies carry no meaningful ID
		if opt == optSetMetaCtx {
			id = uint32(i + 1)
		}
		b := append(binary.BigEndian.AppendUint32(nil, id), n...)
		if c.reply(opt, repMetaContext, b) == optClose {
			return optClose
		}
	}
	return c.reply(opt, repAck, nil)
}

// matchContexts resolves queries. LIST with no query lists everything;
// when listing, a query ending in ':' (a namespace such as "base:" or
// "qemu:dirty-bitmap:") matches every context below it. Otherwise names
// must match exactly.
func matchContexts(exp Export, queries []string, list bool) []string {
	if list && len(queries) == 0 {
		return exp.MetaContexts("")
	}
	var out []string
	seen := make(map[string]bool)
	for _, q := range queries {
		for _, n := range exp.MetaContexts(q) {
			prefix := list && strings.HasSuffix(q, ":")
			if (n == q || prefix) && strings.HasPrefix(n, q) && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}
