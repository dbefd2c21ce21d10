package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/internal/repo"
)

// codecAlone compresses every non-zero 64 KiB chunk of a file (read into
// memory first) with one compression setting on all cores, as a backup's
// packer workers do, and prints the codec's throughput over the logical
// bytes: the limit a full backup can approach.
func codecAlone(args []string) error {
	fs := flag.NewFlagSet("codec", flag.ExitOnError)
	file := fs.String("file", "", "image")
	setting := fs.String("compression", "auto", "auto, max, lz4 or off")
	fs.Parse(args)
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	c, err := repo.NewCodec(*setting, block)
	if err != nil {
		return err
	}
	defer c.Close()
	zero := make([]byte, block)
	var next, stored atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				off := next.Add(block) - block
				if off >= int64(len(data)) {
					return
				}
				chunk := data[off:min(off+block, int64(len(data)))]
				if bytes.Equal(chunk, zero[:len(chunk)]) {
					continue // all-zero chunks are never stored, as in a backup
				}
				stored.Add(int64(c.CompressedLen(chunk)))
			}
		}()
	}
	wg.Wait()
	sec := time.Since(start).Seconds()
	fmt.Printf("%s %.3f s %.0f MB/s stored %d of %d bytes\n", *setting, sec, float64(len(data))/sec/1e6, stored.Load(), len(data))
	return nil
}
