package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// deadOwner reports whether name is PREFIX-PID-N of a process that no
// longer exists (a killed backup on this machine).
func deadOwner(name, prefix string) (suffix string, dead bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || pid <= 0 {
		return "", false
	}
	return rest, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// removeStale removes the exports, fleecing jobs, overlays and temporary
// bitmaps of killed backups, and the NBD server they left running.
func (s *Source) removeStale(ctx context.Context) error {
	var exports []struct {
		ID string `json:"id"`
	}
	if err := s.c.Execute(ctx, "query-block-exports", nil, &exports); err != nil {
		return err
	}
	staleExports, others := 0, 0
	for _, e := range exports {
		if _, dead := deadOwner(e.ID, "bw-"); dead {
			staleExports++
			if err := s.delExport(ctx, e.ID); err != nil {
				return err
			}
		} else {
			others++
		}
	}
	if staleExports > 0 && others == 0 {
		// The server was the killed backup's: nobody else exports.
		if err := s.c.Execute(ctx, "nbd-server-stop", nil, nil); err != nil && !notRunning(err) {
			return err
		}
	}
	var jobs []struct {
		ID string `json:"id"`
	}
	if err := s.c.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		if _, dead := deadOwner(j.ID, "bwjob-"); dead {
			if err := s.cancelJob(ctx, j.ID); err != nil {
				return err
			}
		}
	}
	return s.removeStaleNodes(ctx)
}

// removeStaleNodes deletes dead backups' overlays (and their files) and
// temporary bitmaps.
func (s *Source) removeStaleNodes(ctx context.Context) error {
	var ns []nodeInfo
	if err := s.c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &ns); err != nil {
		return err
	}
	var errs []error
	for _, n := range ns {
		for _, b := range n.Bitmaps {
			if _, dead := deadOwner(b.Name, "bwtmp-"); dead {
				errs = append(errs, s.removeBitmap(ctx, n.NodeName, b.Name))
			}
		}
	}
	files := map[string]string{} // overlay suffix -> its file
	for _, n := range ns {
		if suffix, dead := deadOwner(n.NodeName, "bwff-"); dead {
			files[suffix] = n.Image.Filename
		}
	}
	for _, n := range ns {
		suffix, dead := deadOwner(n.NodeName, "bwfl-")
		if !dead {
			continue
		}
		if err := s.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": n.NodeName}, nil); err != nil && !notFound(err) {
			errs = append(errs, err)
			continue
		}
		if f := files[suffix]; strings.Contains(filepath.Base(f), "blockwise-fleece-") {
			os.Remove(f)
		}
	}
	return errors.Join(errs...)
}

func notRunning(err error) bool { return strings.Contains(err.Error(), "not running") }
