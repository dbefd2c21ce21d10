package fileres

import (
	"archive/tar"
	"archive/zip"
	"context"
	"fmt"
	"io"
	"path"
)

// WriteTar writes ref and everything under it as a PAX tar stream named
// from base (e.g. "etc"): modes, owners, times, symlinks, hard links
// (later names of a file are links to its first), device nodes. Holes are
// written as zeros: Go's tar writer makes no sparse entries.
func (p *Point) WriteTar(ctx context.Context, w io.Writer, base string, ref Ref) error {
	tw := tar.NewWriter(w)
	links := map[Ref]string{}
	err := p.Walk(ctx, base, ref, func(rel string, r Ref, n Node) error {
		h := &tar.Header{Name: rel, Mode: int64(n.Mode & 0o7777), Uid: int(n.Uid), Gid: int(n.Gid),
			ModTime: n.Mtime, AccessTime: n.Atime, ChangeTime: n.Ctime, Format: tar.FormatPAX}
		var body File
		switch {
		case n.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, rel+"/"
		case n.IsRegular() && n.Nlink > 1 && links[r] != "":
			h.Typeflag, h.Linkname = tar.TypeLink, links[r]
		case n.IsRegular():
			f, err := p.Open(ctx, r)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			h.Typeflag, h.Size, body = tar.TypeReg, n.Size, f
			if n.Nlink > 1 {
				links[r] = rel
			}
		case n.IsSymlink():
			tgt, err := p.Readlink(ctx, r)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, tgt
		default:
			h.Typeflag = specialTarType(n.Mode)
			h.Devmajor, h.Devminor = int64(n.Rdev>>8&0xFFF), int64(n.Rdev&0xFF|n.Rdev>>12&0xFFF00)
		}
		if err := tarXattrs(ctx, p, r, h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if body != nil {
			if _, err := io.CopyBuffer(tw, ctxReader{ctx, io.NewSectionReader(body, 0, n.Size)}, copyBuffer(n.Size)); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return nil
	}, nil)
	if err != nil {
		return err
	}
	return tw.Close()
}

// tarXattrs adds ref's extended attributes as PAX records
// SCHILY.xattr.NAME (the form GNU tar --xattrs and bsdtar read); a hard
// link's come with its first name.
func tarXattrs(ctx context.Context, p *Point, r Ref, h *tar.Header) error {
	if h.Typeflag == tar.TypeLink {
		return nil
	}
	xs, err := p.Xattrs(ctx, r)
	if err != nil || len(xs) == 0 {
		return err
	}
	h.PAXRecords = map[string]string{}
	for _, x := range xs {
		h.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
	}
	return nil
}

func specialTarType(mode uint32) byte {
	switch mode & ModeType {
	case ModeChar:
		return tar.TypeChar
	case ModeBlock:
		return tar.TypeBlock
	}
	return tar.TypeFifo // a socket has no tar type; a FIFO is the nearest
}

// WriteZip writes ref and everything under it as a zip archive named from
// base: files with their modes and times, directories, symlinks (as zip
// symlink entries); hard links are stored as copies and device nodes are
// left out, as zip has no place for them.
func (p *Point) WriteZip(ctx context.Context, w io.Writer, base string, ref Ref) error {
	zw := zip.NewWriter(w)
	err := p.Walk(ctx, base, ref, func(rel string, r Ref, n Node) error {
		h := &zip.FileHeader{Name: rel, Method: zip.Deflate, Modified: n.Mtime}
		var body io.Reader
		switch {
		case n.IsDir():
			h.Name, h.Method = rel+"/", zip.Store
			h.SetMode(dirMode(n.Mode))
		case n.IsRegular():
			f, err := p.Open(ctx, r)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			body = io.NewSectionReader(f, 0, n.Size)
			h.SetMode(goMode(n.Mode))
		case n.IsSymlink():
			tgt, err := p.Readlink(ctx, r)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			body = stringsReader(tgt)
			h.SetMode(goMode(n.Mode))
		default:
			return nil
		}
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if body != nil {
			if _, err := io.CopyBuffer(fw, ctxReader{ctx, body}, copyBuffer(n.Size)); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return nil
	}, nil)
	if err != nil {
		return err
	}
	return zw.Close()
}

// ArchiveName is the base name an archive of path gets ("etc" for
// /part1/etc, "point" for the root).
func ArchiveName(p string) string {
	if b := path.Base(path.Clean("/" + p)); b != "/" {
		return b
	}
	return "point"
}
