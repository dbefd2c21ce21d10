// Command mkdisk prepares inputs for bench/nbd.sh: it generates raw test
// images and creates datastore disks, optionally importing a raw image.
//
//	mkdisk -gen random|mixed -size N -out FILE
//	mkdisk -datastore DIR -name NAME -size N [-import FILE] [-fill]
//
// -import copies only the data of FILE (holes and all-zero MiBs skipped)
// through the engine, so the result is exactly a disk a guest wrote.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/blockwise/blockwise/internal/disk"
)

const chunk = 1 << 20

func main() {
	gen := flag.String("gen", "", "generate a raw image: random or mixed (1/3 data, 1/3 written zeroes, 1/3 holes)")
	out := flag.String("out", "", "image to generate")
	ds := flag.String("datastore", "", "datastore directory")
	name := flag.String("name", "d", "disk name")
	size := flag.Int64("size", 2<<30, "size in bytes")
	imp := flag.String("import", "", "raw image to import into the new disk")
	fill := flag.Bool("fill", false, "fill the new disk with random data")
	flag.Parse()
	var err error
	switch {
	case *gen != "":
		err = generate(*gen, *out, *size)
	case *ds != "":
		err = create(*ds, *name, *size, *imp, *fill)
	default:
		err = fmt.Errorf("need -gen or -datastore")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdisk:", err)
		os.Exit(1)
	}
}

func randomize(r *rand.PCG, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
}

func generate(kind, out string, size int64) error {
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	r := rand.NewPCG(1, 2)
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	for i, off := 0, int64(0); off < size; i, off = i+1, off+chunk {
		p := buf[:min(chunk, size-off)]
		switch {
		case kind == "random" || i%3 == 0:
			randomize(r, p)
		case kind == "mixed" && i%3 == 1:
			p = zero[:len(p)]
		case kind == "mixed":
			continue // hole
		default:
			return fmt.Errorf("unknown -gen %q", kind)
		}
		if _, err := f.WriteAt(p, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

func create(dir, name string, size int64, imp string, fill bool) error {
	var src *os.File
	if imp != "" {
		f, err := os.Open(imp)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		src, size = f, st.Size()
	}
	ds, err := disk.OpenDatastore(dir)
	if err != nil {
		return err
	}
	d, err := ds.Create(name, size, disk.Options{})
	if err != nil {
		return err
	}
	buf := make([]byte, chunk)
	r := rand.NewPCG(3, 4)
	zero := make([]byte, chunk)
	for off := int64(0); off < size && (src != nil || fill); off += chunk {
		p := buf[:min(chunk, size-off)]
		if src != nil {
			if _, err := io.ReadFull(io.NewSectionReader(src, off, int64(len(p))), p); err != nil {
				return err
			}
			if bytes.Equal(p, zero[:len(p)]) {
				continue
			}
		} else {
			randomize(r, p)
		}
		if _, err := d.WriteAt(p, off); err != nil {
			return err
		}
	}
	if err := d.Flush(); err != nil {
		return err
	}
	return d.Close()
}
