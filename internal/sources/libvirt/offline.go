package libvirt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/blockwise/blockwise/internal/quiesce"
)

// A shut-off domain has no QEMU to run a backup job: each disk's image
// file is exported read-only by its own qemu-nbd, with the persistent
// bitmap of the newest owned checkpoint (libvirt names a disk's bitmap
// after its checkpoint) attached. No checkpoint can be created offline,
// so the point's change ID stays that checkpoint: the next backup reads
// everything changed since it, a superset of what changed since this
// point, never less.

// noCheckpoint is the change ID's checkpoint of a point read offline
// without a usable bitmap: nothing to continue from.
const noCheckpoint = "none"

// offlineDisk is one disk's qemu-nbd.
type offlineDisk struct {
	sock   string
	bitmap string // attached bitmap, "" when the disk is read whole
	why    string // why not incremental from the base checkpoint
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	stderr bytes.Buffer
}

// imageInfo is what qemu-img info says of an image file.
type imageInfo struct {
	VirtualSize    int64  `json:"virtual-size"`
	Format         string `json:"format"`
	FormatSpecific struct {
		Data struct {
			Bitmaps []struct {
				Name  string   `json:"name"`
				Flags []string `json:"flags"`
			} `json:"bitmaps"`
		} `json:"data"`
	} `json:"format-specific"`
}

func readImageInfo(ctx context.Context, file string) (imageInfo, error) {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "--output=json", file).Output()
	if err != nil {
		return imageInfo{}, fmt.Errorf("qemu-img info %s: %w%s", file, err, stderrOf(err))
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imageInfo{}, fmt.Errorf("qemu-img info %s: %w", file, err)
	}
	return info, nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// usableBitmap says why the bitmap named base cannot answer "changed
// since base" ("" when it can).
func (i imageInfo) usableBitmap(base string) string {
	if base == "" {
		return ""
	}
	if i.Format != "qcow2" {
		return fmt.Sprintf("a %s image keeps no persistent bitmap", i.Format)
	}
	for _, b := range i.FormatSpecific.Data.Bitmaps {
		if b.Name == base {
			if slices.Contains(b.Flags, "in-use") {
				return fmt.Sprintf("bitmap %s is inconsistent (QEMU did not close the image cleanly)", base)
			}
			return ""
		}
	}
	return fmt.Sprintf("bitmap %s of checkpoint %s is missing from the image", base, base)
}

// active reports whether the domain runs (a paused domain counts).
func (s *Source) active() (bool, error) {
	n, err := s.l.DomainIsActive(s.dom)
	return n != 0, err
}

// beginOffline starts one qemu-nbd per chosen disk of the shut-off
// domain. Their image locks keep the domain from starting meanwhile.
func (s *Source) beginOffline(ctx context.Context, j *job) error {
	j.offline = map[string]*offlineDisk{}
	j.newCP = j.base
	j.q = quiesce.Result{Consistency: "crash", Reason: "the domain is shut off: nothing to freeze (the disks are as its last shutdown left them)"}
	for _, d := range s.disks {
		info, err := readImageInfo(ctx, d.file)
		if err != nil {
			return err
		}
		od := &offlineDisk{sock: filepath.Join(j.dir, d.target+".sock"), why: info.usableBitmap(j.base)}
		if j.base != "" && od.why == "" {
			od.bitmap = j.base
		}
		j.sizes[d.target] = info.VirtualSize
		j.offline[d.target] = od
		if err := od.start(ctx, d, info.Format); err != nil {
			return err
		}
	}
	if on, err := s.active(); err != nil || on {
		return fmt.Errorf("domain %s started while its disks were being opened (active %v): %w", s.o.Domain, on, err)
	}
	return nil
}

// start runs qemu-nbd on the disk's image and waits for its socket.
func (od *offlineDisk) start(ctx context.Context, d disk, format string) error {
	args := []string{"-r", "-t", "-e", "16", "-f", format, "-k", od.sock, "-x", d.target}
	if od.bitmap != "" {
		args = append(args, "-B", od.bitmap)
	}
	od.cmd = exec.Command("qemu-nbd", append(args, d.file)...)
	od.cmd.Stderr = &od.stderr
	od.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives us
	if err := od.cmd.Start(); err != nil {
		return fmt.Errorf("qemu-nbd: %w", err)
	}
	od.done = make(chan struct{})
	go func() { od.cmd.Wait(); close(od.done) }() // exits when stop kills it
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(od.sock); err == nil {
			return nil
		}
		select {
		case <-od.done:
			return fmt.Errorf("qemu-nbd of %s exited: %s", d.file, bytes.TrimSpace(od.stderr.Bytes()))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu-nbd of %s: no socket after 30 s", d.file)
		}
	}
}

// stop ends qemu-nbd (its clients are gone: it has nothing to flush).
func (od *offlineDisk) stop() {
	if od.cmd == nil || od.cmd.Process == nil || od.done == nil {
		return
	}
	od.cmd.Process.Kill()
	<-od.done
}

// stopOffline ends the job's qemu-nbd processes.
func (j *job) stopOffline() {
	for _, od := range j.offline {
		od.stop()
	}
}
