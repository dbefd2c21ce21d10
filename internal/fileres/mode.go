package fileres

import (
	"io"
	"io/fs"
	"strings"
)

// goMode converts a stat(2) mode into an fs.FileMode.
func goMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	switch m & ModeType {
	case ModeDir:
		out |= fs.ModeDir
	case ModeSymlink:
		out |= fs.ModeSymlink
	case ModeChar:
		out |= fs.ModeDevice | fs.ModeCharDevice
	case ModeBlock:
		out |= fs.ModeDevice
	case ModeFIFO:
		out |= fs.ModeNamedPipe
	case ModeSocket:
		out |= fs.ModeSocket
	}
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

func dirMode(m uint32) fs.FileMode { return goMode(m&^ModeType | ModeDir) }

// GoMode converts a stat(2) mode into an fs.FileMode (for listings).
func GoMode(m uint32) fs.FileMode { return goMode(m) }

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
