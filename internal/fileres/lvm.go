package fileres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// LVM2 physical volumes: the label in one of the first four sectors, the
// PV header after it, the metadata area's header and the volume group's
// text metadata (the newest copy the header points to). Only linear
// ("striped" with one stripe) segments are read.

const (
	lvmLabel    = "LABELONE"
	lvmType     = "LVM2 001"
	lvmMDAMagic = " LVM2 x[5A%r0N*>"
	maxLVMText  = 1 << 20 // metadata text read from an image
	maxLVMDepth = 8
	maxLVMItems = 1 << 14 // sections and values in one metadata text
)

// lvmPV is a physical volume found on a partition.
type lvmPV struct {
	uuid string // without dashes
	text string // the VG metadata, when this PV has a metadata area
}

// readLVMLabel returns the PV on r, or nil when r holds no LVM2 label.
func readLVMLabel(r io.ReaderAt, size int64) (*lvmPV, error) {
	head := make([]byte, 4*sector)
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, err
	}
	for s := 0; s < 4; s++ {
		l := head[s*sector : (s+1)*sector]
		if string(l[:8]) != lvmLabel || string(l[24:32]) != lvmType {
			continue
		}
		off := int(binary.LittleEndian.Uint32(l[20:]))
		if off < 32 || off > sector-40 {
			return nil, damaged("lvm: PV header at %d in its label sector", off)
		}
		return readPVHeader(r, size, l[off:])
	}
	return nil, nil
}

// readPVHeader reads the PV UUID and, from the first metadata area, the
// metadata text.
func readPVHeader(r io.ReaderAt, size int64, h []byte) (*lvmPV, error) {
	pv := &lvmPV{uuid: string(h[:32])}
	le := binary.LittleEndian
	i := 40
	for ; i+16 <= len(h) && le.Uint64(h[i:]) != 0; i += 16 { // data areas
	}
	i += 16
	if i+16 > len(h) {
		return nil, damaged("lvm: PV header lists run past its sector")
	}
	mda := int64(le.Uint64(h[i:]))
	if mda == 0 {
		return pv, nil // no metadata area on this PV
	}
	mdaSize := int64(le.Uint64(h[i+8:]))
	text, err := readMDA(r, size, mda, mdaSize)
	if err != nil {
		return nil, err
	}
	pv.text = text
	return pv, nil
}

// readMDA reads the metadata text the area's header points to; the area
// is a ring after its 512-byte header, so the text may wrap.
func readMDA(r io.ReaderAt, size, start, mdaSize int64) (string, error) {
	if start <= 0 || mdaSize < 1024 || start > size || mdaSize > size-start {
		return "", damaged("lvm: metadata area %d+%d outside the volume", start, mdaSize)
	}
	h := make([]byte, sector)
	if _, err := r.ReadAt(h, start); err != nil {
		return "", err
	}
	if string(h[4:20]) != lvmMDAMagic {
		return "", damaged("lvm: metadata area header magic")
	}
	le := binary.LittleEndian
	off, n := int64(le.Uint64(h[40:])), int64(le.Uint64(h[48:]))
	if n <= 0 || n > maxLVMText || off < sector || off >= mdaSize {
		return "", damaged("lvm: metadata text of %d bytes at %d in a %d-byte area", n, off, mdaSize)
	}
	text := make([]byte, n)
	first := min(n, mdaSize-off)
	if _, err := r.ReadAt(text[:first], start+off); err != nil {
		return "", err
	}
	if first < n {
		if n-first > mdaSize-sector {
			return "", damaged("lvm: metadata text wraps past its area")
		}
		if _, err := r.ReadAt(text[first:], start+sector); err != nil {
			return "", err
		}
	}
	return string(bytes.TrimRight(text, "\x00")), nil
}

// lvmNode is a section of LVM2 text metadata: values and subsections.
type lvmNode struct {
	vals map[string][]string // a scalar is a one-element list
	subs map[string]*lvmNode
	keys []string // subsection names in order
}

// parseLVMText parses the metadata text format (name = value, name { },
// lists in [ ], "strings", # comments).
func parseLVMText(s string) (*lvmNode, error) {
	p := &lvmParser{toks: lvmTokens(s)}
	root, err := p.section(0)
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, damaged("lvm: metadata: unexpected %q", p.toks[p.i])
	}
	return root, nil
}

type lvmParser struct {
	toks  []string
	i     int
	items int
}

func (p *lvmParser) next() string {
	if p.i >= len(p.toks) {
		return ""
	}
	p.i++
	return p.toks[p.i-1]
}

func (p *lvmParser) section(depth int) (*lvmNode, error) {
	if depth > maxLVMDepth {
		return nil, damaged("lvm: metadata nested over %d levels", maxLVMDepth)
	}
	n := &lvmNode{vals: map[string][]string{}, subs: map[string]*lvmNode{}}
	for p.i < len(p.toks) && p.toks[p.i] != "}" {
		if p.items++; p.items > maxLVMItems {
			return nil, damaged("lvm: metadata of over %d items", maxLVMItems)
		}
		name := p.next()
		switch p.next() {
		case "{":
			sub, err := p.section(depth + 1)
			if err != nil {
				return nil, err
			}
			if p.next() != "}" {
				return nil, damaged("lvm: metadata: section %q not closed", name)
			}
			n.subs[name], n.keys = sub, append(n.keys, name)
		case "=":
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			n.vals[name] = v
		default:
			return nil, damaged("lvm: metadata: expected = or { after %q", name)
		}
	}
	return n, nil
}

func (p *lvmParser) value() ([]string, error) {
	t := p.next()
	if t != "[" {
		return []string{unquote(t)}, nil
	}
	var out []string
	for {
		t := p.next()
		switch t {
		case "]":
			return out, nil
		case "":
			return nil, damaged("lvm: metadata: list not closed")
		case ",":
			continue
		}
		if p.items++; p.items > maxLVMItems {
			return nil, damaged("lvm: metadata of over %d items", maxLVMItems)
		}
		out = append(out, unquote(t))
	}
}

func unquote(t string) string {
	if len(t) >= 2 && t[0] == '"' {
		return strings.ReplaceAll(strings.ReplaceAll(t[1:len(t)-1], `\"`, `"`), `\\`, `\`)
	}
	return t
}

// lvmTokens splits metadata text into tokens: punctuation, quoted
// strings (kept with their quotes) and bare words.
func lvmTokens(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.IndexByte("{}[]=,", c) >= 0:
			out = append(out, s[i:i+1])
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			out = append(out, s[i:j])
			i = j
		default:
			j := i
			for j < len(s) && strings.IndexByte("{}[]=,# \t\r\n\"", s[j]) < 0 {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// lvmLV is a logical volume: linear pieces on physical volumes.
type lvmLV struct {
	name string
	size int64
	segs []lvmSeg
	err  error // an unsupported layout (thin, raid, striped over several PVs)
}

type lvmSeg struct {
	off, len int64 // bytes in the LV
	pv       string
	pvOff    int64 // bytes on the PV (including pe_start)
}

// lvmLayout reads a volume group's logical volumes from its metadata.
func lvmLayout(root *lvmNode) (vg string, lvs []lvmLV, err error) {
	if len(root.keys) != 1 {
		return "", nil, damaged("lvm: metadata names %d volume groups", len(root.keys))
	}
	vg = root.keys[0]
	g := root.subs[vg]
	es, err := g.int("extent_size")
	if err != nil || es <= 0 || es > 1<<32 {
		return "", nil, damaged("lvm: volume group %s: extent size %d", vg, es)
	}
	es *= sector
	pvs := map[string][2]any{} // name -> uuid, pe_start
	if sec := g.subs["physical_volumes"]; sec != nil {
		for _, name := range sec.keys {
			pv := sec.subs[name]
			start, err := pv.int("pe_start")
			if err != nil {
				return "", nil, err
			}
			pvs[name] = [2]any{strings.ReplaceAll(pv.str("id"), "-", ""), start * sector}
		}
	}
	lvsec := g.subs["logical_volumes"]
	if lvsec == nil {
		return vg, nil, nil
	}
	for _, name := range lvsec.keys {
		lvs = append(lvs, lvmLogical(name, lvsec.subs[name], es, pvs))
	}
	return vg, lvs, nil
}

func (n *lvmNode) str(k string) string {
	if v := n.vals[k]; len(v) == 1 {
		return v[0]
	}
	return ""
}

func (n *lvmNode) int(k string) (int64, error) {
	v, err := strconv.ParseInt(n.str(k), 10, 64)
	if err != nil {
		return 0, damaged("lvm: metadata value %s=%q", k, n.str(k))
	}
	return v, nil
}

// lvmLogical maps one LV's segments; a layout other than linear gives
// the LV an error, not the whole group.
func lvmLogical(name string, lv *lvmNode, es int64, pvs map[string][2]any) lvmLV {
	out := lvmLV{name: name}
	for _, sname := range lv.keys {
		s := lv.subs[sname]
		if !strings.HasPrefix(sname, "segment") {
			continue
		}
		typ, stripes := s.str("type"), s.vals["stripes"]
		if typ != "striped" || s.str("stripe_count") != "1" || len(stripes) != 2 {
			out.err = unsupported("lvm: logical volume %s: segment type %q with %s stripes (only linear volumes are read)", name, typ, s.str("stripe_count"))
			return out
		}
		start, err1 := s.int("start_extent")
		count, err2 := s.int("extent_count")
		pe, err3 := strconv.ParseInt(stripes[1], 10, 64)
		pv, ok := pvs[stripes[0]]
		if err1 != nil || err2 != nil || err3 != nil || !ok || start < 0 || count <= 0 || pe < 0 || count > 1<<40/es || pe > 1<<40/es || start > 1<<40/es {
			out.err = damaged("lvm: logical volume %s: segment %s does not parse", name, sname)
			return out
		}
		out.segs = append(out.segs, lvmSeg{off: start * es, len: count * es, pv: pv[0].(string), pvOff: pv[1].(int64) + pe*es})
		out.size = max(out.size, (start+count)*es)
	}
	return out
}

// lvReader reads an LV through its segments on the PVs' readers.
type lvReader struct {
	segs []lvmSeg
	pvs  map[string]io.ReaderAt
	size int64
}

// ReadAt implements io.ReaderAt through the segments.
func (l *lvReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= l.size {
			return n, io.EOF
		}
		seg := -1
		for i, s := range l.segs {
			if pos >= s.off && pos < s.off+s.len {
				seg = i
				break
			}
		}
		if seg < 0 {
			return n, fmt.Errorf("lvm: offset %d of the logical volume in no segment: %w", pos, ErrDamaged)
		}
		s := l.segs[seg]
		k := int(min(int64(len(p)-n), s.off+s.len-pos))
		m, err := l.pvs[s.pv].ReadAt(p[n:n+k], s.pvOff+pos-s.off)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
