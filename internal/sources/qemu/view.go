package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/quiesce"
)

// view is one drive's point-in-time image and what was true of its
// bitmaps when it was taken.
type view struct {
	d       *drive
	id      string // bw-PID-N: names the job (bwjob-), overlay (bwfl-), export, temp bitmap (bwtmp-)
	path    string // overlay file
	size    int64
	created time.Time
	newBM   string                // owned bitmap added with the view
	owned   map[string]bitmapInfo // owned bitmaps before the rotation (consistent ones)
	broken  []string              // owned bitmaps found inconsistent (removed)
	// restored: blockwise restore wrote the drive since (its marker
	// bitmap was there, now removed): no chain holds.
	restored bool
	quiesce  quiesce.Result

	exported bool
	bitmap   string // exported temp bitmap, "" for a full read
}

func (v *view) snapshot() backup.Snapshot {
	return backup.Snapshot{ID: v.id, ChangeID: fmt.Sprintf("%s:%d", v.newBM, v.size), Size: v.size,
		Created: v.created, Consistency: v.quiesce.Consistency, ConsistencyReason: v.quiesce.Reason}
}

func (v *view) uri(sock string) string { return "nbd+unix:///" + v.id + "?socket=" + sock }

// QMP shapes of query-block.
type blockInfo struct {
	Device   string       `json:"device"`
	QDev     string       `json:"qdev"`
	Inserted *nodeInfo    `json:"inserted"`
	Bitmaps  []bitmapInfo `json:"dirty-bitmaps"` // before QEMU 4.2
}

type nodeInfo struct {
	NodeName string `json:"node-name"`
	Drv      string `json:"drv"`
	Image    struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
		Filename    string `json:"filename"`
		// BackingImage: an overlay's backing file (the drive a restore
		// overlay was put over).
		BackingImage struct {
			Filename string `json:"filename"`
		} `json:"backing-image"`
	} `json:"image"`
	Bitmaps []bitmapInfo `json:"dirty-bitmaps"`
}

type bitmapInfo struct {
	Name         string `json:"name"`
	Recording    bool   `json:"recording"`
	Busy         bool   `json:"busy"`
	Persistent   bool   `json:"persistent"`
	Inconsistent bool   `json:"inconsistent"`
	Granularity  int64  `json:"granularity"`
}

func (s *Source) queryBlock(ctx context.Context) ([]blockInfo, error) {
	var bs []blockInfo
	if err := s.c.Execute(ctx, "query-block", nil, &bs); err != nil {
		return nil, err
	}
	return bs, nil
}

// nodeInfo reads a node's size and bitmaps from query-named-block-nodes
// (query-block shows a filter node while a job runs).
func (s *Source) nodeInfo(ctx context.Context, node string) (*nodeInfo, error) {
	var ns []nodeInfo
	if err := s.c.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &ns); err != nil {
		return nil, err
	}
	for i := range ns {
		if ns[i].NodeName == node {
			return &ns[i], nil
		}
	}
	return nil, fmt.Errorf("%w: node %s", ErrNoDrive, node)
}

func (s *Source) prefix() string { return "blockwise-" + s.o.Tag + "-" }

// takeViews starts fleecing of every drive in one transaction that also
// rotates the owned bitmaps, inside the quiesce window.
func (s *Source) takeViews(ctx context.Context, ds []*drive) (vs []*view, err error) {
	defer func() {
		if err != nil {
			for _, v := range vs {
				s.teardown(context.WithoutCancel(ctx), v)
			}
			vs = nil
		}
	}()
	seq := fmt.Sprintf("%019d", time.Now().UnixNano())
	var actions []map[string]any
	for _, d := range ds {
		v, err := s.prepareView(ctx, d, seq)
		if v != nil {
			vs = append(vs, v)
		}
		if err != nil {
			return vs, err
		}
		actions = append(actions, v.actions()...)
	}
	q, err := quiesce.Run(ctx, s.o.Quiesce, func(ctx context.Context) error {
		return s.c.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil)
	})
	if err != nil {
		return vs, err
	}
	now := time.Now()
	for _, v := range vs {
		v.quiesce, v.created = q, now
	}
	return vs, nil
}

// prepareView removes the drive's inconsistent owned bitmaps, notes the
// others, and adds its fleecing overlay node.
func (s *Source) prepareView(ctx context.Context, d *drive, seq string) (*view, error) {
	info, err := s.nodeInfo(ctx, d.node)
	if err != nil {
		return nil, err
	}
	s.seq++
	v := &view{d: d, id: fmt.Sprintf("bw-%d-%d", s.pid, s.seq), size: info.Image.VirtualSize,
		newBM: s.prefix() + seq, owned: map[string]bitmapInfo{}}
	if err := s.scanBitmaps(ctx, d, info, v); err != nil {
		return nil, err
	}
	v.path = filepath.Join(s.o.Scratch, "blockwise-fleece-"+v.id+".qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", v.path, strconv.FormatInt(v.size, 10)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create fleecing overlay: %v: %s", err, out)
	}
	add := map[string]any{"driver": "qcow2", "node-name": "bwfl-" + v.id[3:], "backing": d.node,
		"file": map[string]any{"driver": "file", "filename": v.path, "node-name": "bwff-" + v.id[3:]}}
	if err := s.c.Execute(ctx, "blockdev-add", add, nil); err != nil {
		os.Remove(v.path)
		return nil, fmt.Errorf("add fleecing overlay of %s: %w", d.node, err)
	}
	return v, nil
}

// scanBitmaps notes the drive's owned bitmaps in v, removing the
// inconsistent ones and the marker of a restore into the drive.
func (s *Source) scanBitmaps(ctx context.Context, d *drive, info *nodeInfo, v *view) error {
	for _, b := range info.Bitmaps {
		if b.Name == s.restoredMarker() {
			if err := s.removeBitmap(ctx, d.node, b.Name); err != nil {
				return err
			}
			v.restored = true
			continue
		}
		if !strings.HasPrefix(b.Name, s.prefix()) {
			continue
		}
		if b.Inconsistent {
			// QEMU stopped uncleanly while it was in use: never trusted,
			// and it can only be removed.
			if err := s.removeBitmap(ctx, d.node, b.Name); err != nil {
				return err
			}
			v.broken = append(v.broken, b.Name)
			continue
		}
		v.owned[b.Name] = b
	}
	return nil
}

// actions are the view's part of the transaction: fleecing starts, the
// new bitmap is added and the recording owned ones stop.
func (v *view) actions() []map[string]any {
	acts := []map[string]any{
		{"type": "blockdev-backup", "data": map[string]any{"job-id": "bwjob-" + v.id[3:], "device": v.d.node,
			"target": "bwfl-" + v.id[3:], "sync": "none", "auto-dismiss": true}},
		{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": v.d.node, "name": v.newBM,
			"persistent": v.d.format == "qcow2"}},
	}
	for _, name := range sortedNames(v.owned) {
		if v.owned[name].Recording {
			acts = append(acts, map[string]any{"type": "block-dirty-bitmap-disable",
				"data": map[string]any{"node": v.d.node, "name": name}})
		}
	}
	return acts
}

func sortedNames(m map[string]bitmapInfo) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// areas returns what to read: the union of the owned bitmaps since the
// parent's change ID, or (since "*") the allocated areas. It exports the
// view on first use.
func (s *Source) areas(ctx context.Context, v *view, since string) ([]backup.Area, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.exported {
		return nil, fmt.Errorf("view %s was already read", v.id)
	}
	if since == "*" {
		if err := s.export(ctx, v, nil); err != nil {
			return nil, err
		}
		return s.readAreas(ctx, v, "base:allocation")
	}
	names, err := v.chain(since)
	if err != nil {
		return nil, fmt.Errorf("%w: drive %s: %v", backup.ErrChangeIDInvalid, v.d.node, err)
	}
	for _, old := range sortedNames(v.owned) {
		if old < names[0] { // older than the parent's point: no use any more
			s.removeBitmap(ctx, v.d.node, old)
		}
	}
	if err := s.export(ctx, v, names); err != nil {
		return nil, err
	}
	return s.readAreas(ctx, v, "qemu:dirty-bitmap:"+v.bitmap)
}

// chain checks that the owned bitmaps can answer "changed since" the
// change ID, and returns the bitmaps whose union does.
func (v *view) chain(since string) ([]string, error) {
	name, sizeStr, ok := strings.Cut(since, ":")
	size, err := strconv.ParseInt(sizeStr, 10, 64)
	if !ok || err != nil || !strings.HasPrefix(name, "blockwise-") {
		return nil, fmt.Errorf("change ID %q is not one of a QEMU bitmap of blockwise", since)
	}
	if v.restored {
		return nil, fmt.Errorf("a restore point was restored into the drive since the last point (blockwise restore --to-uri): its bitmaps were reset")
	}
	for _, b := range v.broken {
		if b >= name {
			return nil, fmt.Errorf("bitmap %s was inconsistent (QEMU stopped uncleanly while it was in use) and was removed", b)
		}
	}
	if size != v.size {
		return nil, fmt.Errorf("drive resized from %d to %d bytes since the last point", size, v.size)
	}
	if _, ok := v.owned[name]; !ok && len(v.broken) > 0 {
		return nil, fmt.Errorf("bitmap %s of the last point is missing and %s was inconsistent: QEMU stopped uncleanly (bitmaps are stored at a clean close)", name, strings.Join(v.broken, ", "))
	}
	if _, ok := v.owned[name]; !ok {
		return nil, fmt.Errorf("bitmap %s of the last point is missing (the VM was restarted without it, the image was swapped or reverted, or it was removed)", name)
	}
	var names []string
	for _, n := range sortedNames(v.owned) {
		if n >= name {
			names = append(names, n)
		}
	}
	if last := v.owned[names[len(names)-1]]; !last.Recording {
		return nil, fmt.Errorf("bitmap %s was not recording: changes since the last point were not tracked", last.Name)
	}
	return names, nil
}

// export adds the view's NBD export, with a temporary disabled bitmap
// merged from names when given.
func (s *Source) export(ctx context.Context, v *view, names []string) error {
	if err := s.startNBD(ctx); err != nil {
		return err
	}
	args := map[string]any{"type": "nbd", "id": v.id, "node-name": "bwfl-" + v.id[3:], "name": v.id, "writable": false}
	if names != nil {
		tmp := "bwtmp-" + v.id[3:]
		if err := s.c.Execute(ctx, "block-dirty-bitmap-add", map[string]any{"node": v.d.node, "name": tmp,
			"persistent": false, "disabled": true}, nil); err != nil {
			return err
		}
		v.bitmap = tmp
		if err := s.c.Execute(ctx, "block-dirty-bitmap-merge", map[string]any{"node": v.d.node, "target": tmp,
			"bitmaps": names}, nil); err != nil {
			return err
		}
		args["bitmaps"] = []string{tmp}
	}
	if err := s.c.Execute(ctx, "block-export-add", args, nil); err != nil {
		return err
	}
	v.exported = true
	return nil
}

// startNBD starts QEMU's NBD server on a socket of ours, once.
func (s *Source) startNBD(ctx context.Context) error {
	if s.nbdOurs {
		return nil
	}
	sock := filepath.Join(s.o.Scratch, fmt.Sprintf("blockwise-nbd-%d.sock", s.pid))
	err := s.c.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
		"data": map[string]any{"path": sock}}}, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNBDServer, err)
	}
	s.nbdSock, s.nbdOurs = sock, true
	return nil
}

func (s *Source) stopNBD(ctx context.Context) error {
	if !s.nbdOurs {
		return nil
	}
	s.nbdOurs = false
	defer os.Remove(s.nbdSock)
	return s.c.Execute(ctx, "nbd-server-stop", nil, nil)
}

func (s *Source) removeBitmap(ctx context.Context, node, name string) error {
	return s.c.Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": node, "name": name}, nil)
}

// teardown removes a view's export, job, overlay and temporary bitmap,
// each step attempted whatever the others did.
func (s *Source) teardown(ctx context.Context, v *view) error {
	var errs []error
	if v.exported {
		errs = append(errs, s.delExport(ctx, v.id))
	}
	errs = append(errs, s.endView(ctx, v.d.node, v.id[3:], v.path))
	return errors.Join(errs...)
}

// endView cancels the fleecing job, deletes the overlay node and file and
// the temporary bitmap of the view whose names end in suffix (PID-N).
func (s *Source) endView(ctx context.Context, node, suffix, path string) error {
	var errs []error
	if err := s.cancelJob(ctx, "bwjob-"+suffix); err != nil {
		errs = append(errs, err)
	}
	if err := s.c.Execute(ctx, "blockdev-del", map[string]any{"node-name": "bwfl-" + suffix}, nil); err != nil && !notFound(err) {
		errs = append(errs, err)
	}
	if node != "" {
		if err := s.removeBitmap(ctx, node, "bwtmp-"+suffix); err != nil && !notFound(err) {
			errs = append(errs, err)
		}
	}
	if path != "" {
		os.Remove(path)
	}
	return errors.Join(errs...)
}

func notFound(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "not found") || strings.Contains(msg, "Cannot find") || strings.Contains(msg, "Failed to find node") ||
		strings.Contains(msg, "No job") || strings.Contains(msg, "DeviceNotFound") || strings.Contains(msg, "not exist")
}

// cancelJob cancels a fleecing job and waits until it is gone.
func (s *Source) cancelJob(ctx context.Context, id string) error {
	err := s.c.Execute(ctx, "block-job-cancel", map[string]any{"device": id, "force": true}, nil)
	if err != nil && !notFound(err) {
		return err
	}
	return s.waitGone(ctx, "query-jobs", id)
}

// delExport removes an export and waits until QEMU has dropped it (its
// clients are disconnected with mode hard).
func (s *Source) delExport(ctx context.Context, id string) error {
	err := s.c.Execute(ctx, "block-export-del", map[string]any{"id": id, "mode": "hard"}, nil)
	if err != nil && !notFound(err) {
		return err
	}
	return s.waitGone(ctx, "query-block-exports", id)
}

// waitGone polls a query-* command until no entry has the id.
func (s *Source) waitGone(ctx context.Context, query, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var items []struct {
			ID string `json:"id"`
		}
		if err := s.c.Execute(ctx, query, nil, &items); err != nil {
			return err
		}
		found := false
		for _, it := range items {
			found = found || it.ID == id
		}
		if !found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s still there: %w", query, id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
