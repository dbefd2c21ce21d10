package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/disk"
	"github.com/blockwise/blockwise/internal/host"
)

// Target states (wire.Replica.State).
const (
	targetReceiving  = wire.ReplicationOK
	targetFailedOver = wire.ReplicationFailedOver
)

// pointSnap names a replica point's snapshot on the target.
func pointSnap(seq uint64) string { return "rp-" + strconv.FormatUint(seq, 10) }

// replicaState is a target's group file (DATASTORE/replicas/GROUP.json).
type replicaState struct {
	wire.Replica
	// Base is where the replica disks were before the first point (rp-0,
	// or the old source's point after reprotect): what a half-applied
	// first cycle rolls back to.
	Base       wire.ReplicationPoint `json:"base"`
	Keep       int                   `json:"keep"`
	KeepWithin time.Duration         `json:"keepWithin,omitempty"`
}

// last is the latest complete point, or the base.
func (st *replicaState) last() wire.ReplicationPoint {
	if n := len(st.Points); n > 0 {
		return st.Points[n-1]
	}
	return st.Base
}

// target answers the replica routes of one host.
type target struct {
	h     *host.Host
	store store
	mu    sync.Mutex // serializes every target operation (and batch)
	tests map[string]*testCopy
	// progress is, by group, the staged cycle's per-disk progress. It is
	// kept in memory only: a restart of this host rolls the staged cycle
	// back (R4), so no batch needs its own fsync; the commit flushes.
	progress map[string]*cycleProgress
	// ready is set once the start's recovery ran (R4): replica routes
	// answer 503 before.
	ready atomic.Bool
	// mismatches counts, by group, points refused for a root mismatch
	// (R10), for /metrics.
	mm         sync.Mutex
	mismatches map[string]uint64
}

// cycleProgress is a staged cycle's acknowledged offsets by disk.
type cycleProgress struct {
	cycle string
	done  map[string]int64
}

func (t *target) get(group string) (*replicaState, error) {
	var st replicaState
	if err := t.store.load(group, &st); err != nil {
		return nil, fmt.Errorf("replica %s: %w", group, ErrNotFound)
	}
	return &st, nil
}

func (t *target) save(st *replicaState) error { return t.store.save(st.Group, st) }

// put declares a group on the target (PUT /v1/replicas/{group}). Every
// check runs before anything is created: a refused request changes
// nothing (invariant R8).
func (t *target) put(ctx context.Context, group string, req wire.PutReplicaRequest) (*replicaState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := disk.ValidName(group); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if st, err := t.get(group); err == nil {
		if !sameDisks(st.Disks, req.Disks) {
			return nil, fmt.Errorf("%w: replica %s exists with other disks", ErrInvalid, group)
		}
		if st.State != targetReceiving {
			return nil, fmt.Errorf("%w: replica %s is %s", ErrState, group, st.State)
		}
		if len(st.Points) > 0 && !req.Seed { // a new source group meets an old replica
			return nil, fmt.Errorf("replica %s: %w on the target at point %d: --seed compares and sends only the differences",
				group, disk.ErrExists, st.last().Seq)
		}
		st.Keep, st.KeepWithin = req.Keep, parseDur(req.KeepWithin)
		return st, t.save(st)
	}
	if err := t.checkDisks(req); err != nil {
		return nil, err
	}
	st := &replicaState{Replica: wire.Replica{Group: group, State: targetReceiving, Disks: req.Disks},
		Keep: req.Keep, KeepWithin: parseDur(req.KeepWithin)}
	st.Base = wire.ReplicationPoint{Snapshots: map[string]string{}}
	for _, rd := range req.Disks {
		d, err := t.h.Disk(rd.Name)
		if errors.Is(err, disk.ErrNotFound) {
			d, err = t.h.Create(rd.Name, rd.Size, disk.Options{})
		}
		if err != nil {
			return nil, err
		}
		if _, err := snapshotIdle(ctx, d, pointSnap(0), "replica base"); err != nil && !errors.Is(err, disk.ErrExists) {
			return nil, err
		}
		st.Base.Snapshots[rd.Name] = pointSnap(0)
		t.h.Protect(rd.Name, "replica of "+group)
	}
	return st, t.save(st)
}

// checkDisks: a new replica disk must not exist, unless seeding, where
// it must exist with the same size.
func (t *target) checkDisks(req wire.PutReplicaRequest) error {
	names, err := t.h.Datastore().List()
	if err != nil {
		return err
	}
	for _, rd := range req.Disks {
		if err := disk.ValidName(rd.Name); err != nil || rd.Size <= 0 {
			return fmt.Errorf("%w: disk %q of %d bytes", ErrInvalid, rd.Name, rd.Size)
		}
		exists := slices.Contains(names, rd.Name)
		switch {
		case exists && !req.Seed:
			return fmt.Errorf("%w: disk %s exists on the target: seed from it (--seed) or choose another target name", disk.ErrExists, rd.Name)
		case !exists && req.Seed:
			return fmt.Errorf("disk %s: %w on the target (seeding needs it)", rd.Name, disk.ErrNotFound)
		case exists:
			d, err := t.h.Disk(rd.Name)
			if err != nil {
				return err
			}
			if d.Size() != rd.Size {
				return fmt.Errorf("%w: target disk %s has %d bytes, the source %d", ErrInvalid, rd.Name, d.Size(), rd.Size)
			}
		}
	}
	return nil
}

func sameDisks(a, b []wire.ReplicaDisk) bool { return slices.Equal(a, b) }

func parseDur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// begin starts or resumes a cycle (POST /v1/replicas/{group}/cycles):
// the same cycle ID resumes from the progress recorded; another one
// starts over from the base (invariant R2: the live layer differs from
// the last point only in blocks the new delta rewrites).
func (t *target) begin(group string, req wire.BeginCycleRequest) (*replicaState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return nil, err
	}
	if st.State != targetReceiving {
		return st, fmt.Errorf("%w: replica %s is %s", ErrState, group, st.State)
	}
	last := st.last().Seq
	if req.Seq <= last { // committed already: the source lost the answer
		return st, nil
	}
	if req.Base != last || req.Seq != last+1 {
		return st, fmt.Errorf("%w: cycle %d from point %d, but the target's last point is %d", ErrState, req.Seq, req.Base, last)
	}
	if p := t.progress[group]; p != nil && p.cycle == req.Cycle && st.Staging != nil && st.Staging.Cycle == req.Cycle {
		st.Staging.Progress = maps.Clone(p.done)
		return st, nil
	}
	st.Staging = &wire.ReplicaStaging{Cycle: req.Cycle, Seq: req.Seq, Base: req.Base, Progress: map[string]int64{}}
	for _, rd := range st.Disks {
		st.Staging.Progress[rd.Name] = 0
	}
	if err := t.save(st); err != nil { // before any data: a restart rolls back (R4)
		return nil, err
	}
	t.progress[group] = &cycleProgress{cycle: req.Cycle, done: maps.Clone(st.Staging.Progress)}
	return st, nil
}

// maxBatchBody bounds one batch's request body as sent.
const maxBatchBody = 64 << 20

// apply lands one batch of a disk (the data route): frames written to
// the replica disk's live layer, flushed, then the progress recorded;
// the answer is the acknowledgment the source resumes from (R3).
func (t *target) apply(ctx context.Context, group, cycle, name string, from, to int64, body io.Reader, zstdBody bool) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return 0, err
	}
	prog := t.progress[group]
	if st.Staging == nil || st.Staging.Cycle != cycle || st.State != targetReceiving || prog == nil || prog.cycle != cycle {
		return 0, fmt.Errorf("%w: cycle %s is not the one staged", ErrState, cycle)
	}
	done, ok := prog.done[name]
	if !ok {
		return 0, fmt.Errorf("%w: disk %s is not in replica %s", ErrInvalid, name, group)
	}
	if from > done {
		return done, fmt.Errorf("%w: batch from %d leaves a gap after %d", ErrState, from, done)
	}
	d, err := t.h.Disk(name)
	if err != nil {
		return 0, err
	}
	if to > d.Size() || from < 0 || to < from {
		return done, fmt.Errorf("%w: batch [%d, %d) of a %d-byte disk", ErrBadFrame, from, to, d.Size())
	}
	if err := writeFrames(d, body, zstdBody, from, to); err != nil {
		return done, err
	}
	prog.done[name] = max(done, to)
	return prog.done[name], nil
}

func writeFrames(d *disk.Disk, body io.Reader, zstdBody bool, from, to int64) error {
	if zstdBody {
		zr, err := zstd.NewReader(body, zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		body = zr
	}
	fr := newFrameReader(body, d.Size(), from, to)
	for {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if f.kind == frameZero {
			err = d.Zero(f.off, f.length, true)
		} else {
			_, err = d.WriteAt(f.data, f.off)
		}
		if err != nil {
			return err
		}
	}
}

// commit makes the staged cycle a point (POST .../commit): every disk's
// delta is durable (progress at its size), each disk gets its rp-SEQ
// snapshot, and only then the group file lists the point (invariant R1).
func (t *target) commit(ctx context.Context, group, cycle string, when time.Time, roots map[string]wire.TreeRoot) (*wire.ReplicationPoint, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := t.get(group)
	if err != nil {
		return nil, err
	}
	if st.Staging == nil || st.Staging.Cycle != cycle {
		if p := st.last(); p.Seq > 0 && st.Staging == nil {
			return &p, nil // committed before; the answer was lost
		}
		return nil, fmt.Errorf("%w: cycle %s is not staged", ErrState, cycle)
	}
	p := wire.ReplicationPoint{Seq: st.Staging.Seq, Time: when.UTC(), Snapshots: map[string]string{}}
	prog := t.progress[group]
	for _, rd := range st.Disks {
		if prog == nil || prog.cycle != cycle || prog.done[rd.Name] < rd.Size {
			return nil, fmt.Errorf("%w: disk %s has not landed whole", ErrState, rd.Name)
		}
	}
	for _, rd := range st.Disks {
		d, err := t.h.Disk(rd.Name)
		if err != nil {
			return nil, err
		}
		if err := d.Flush(); err != nil { // the whole delta durable before the point (R1)
			return nil, err
		}
		id := pointSnap(p.Seq)
		if err := deleteSnap(ctx, d, id); err != nil { // an earlier commit's, of another cycle
			return nil, err
		}
		if _, err := snapshotIdle(ctx, d, id, "replica point of "+group); err != nil {
			return nil, err
		}
		p.Snapshots[rd.Name] = id
	}
	if err := t.verifyRoots(ctx, p, roots); err != nil { // R10: before the point is listed
		if errors.Is(err, ErrRootMismatch) {
			return nil, t.refusePoint(ctx, st, p, err)
		}
		return nil, err
	}
	st.Points = append(st.Points, p)
	st.Staging, st.Dirty = nil, nil
	delete(t.progress, group)
	if err := t.save(st); err != nil {
		return nil, err
	}
	return &p, t.retain(ctx, st)
}

// retain deletes the snapshots of points the retention drops, after the
// group file stopped listing them (R5); points a test failover uses stay.
// The consolidations run in the background (the next commit's snapshot
// waits for them); snapshots a busy disk kept are swept next time.
func (t *target) retain(ctx context.Context, st *replicaState) error {
	keep := thin(st.Points, st.Keep, st.KeepWithin, time.Now())
	var kept, dropped []wire.ReplicationPoint
	for _, p := range st.Points {
		if keep[p.Seq] || t.pinned(st.Group, p.Seq) {
			kept = append(kept, p)
		} else {
			dropped = append(dropped, p)
		}
	}
	st.Points = kept
	if len(dropped) > 0 {
		if err := t.save(st); err != nil {
			return err
		}
	}
	listed := map[string]bool{}
	for _, p := range append([]wire.ReplicationPoint{st.Base}, st.Points...) {
		for _, s := range p.Snapshots {
			listed[s] = true
		}
	}
	for _, rd := range st.Disks {
		if d, err := t.h.Disk(rd.Name); err == nil {
			sweep(d, "rp-", func(id string) bool { return !listed[id] })
		}
	}
	return nil
}

// checksums answers BLAKE3-256 sums of a replica disk's live blocks (the
// seed comparison). Checksummer is the hook where a per-snapshot hash
// tree can answer instead of reading the disk.
func (t *target) checksums(ctx context.Context, group, name string, req wire.ChecksumsRequest) ([]string, error) {
	st, err := t.get(group)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(st.Disks, func(rd wire.ReplicaDisk) bool { return rd.Name == name }) {
		return nil, fmt.Errorf("%w: disk %s is not in replica %s", ErrInvalid, name, group)
	}
	d, err := t.h.Disk(name)
	if err != nil {
		return nil, err
	}
	if req.Tree {
		snap, ok := st.last().Snapshots[name]
		if !ok {
			snap = pointSnap(st.last().Seq)
		}
		return treeLeaves(ctx, d, snap, req)
	}
	return blockSums(d, d.Size(), req)
}

// Checksummer sums consecutive blocks of a disk image; readerChecksums
// reads the data, a hash tree could answer from its leaves instead.
type Checksummer func(r io.ReaderAt, size int64, req wire.ChecksumsRequest) ([]string, error)

var blockSums Checksummer = readerChecksums

// maxSums bounds one checksum request.
const maxSums = 16384

func readerChecksums(r io.ReaderAt, size int64, req wire.ChecksumsRequest) ([]string, error) {
	if req.BlockSize <= 0 || req.BlockSize > 4<<20 || req.Offset < 0 || req.Length < 0 ||
		req.Offset+req.Length > size || req.Length/req.BlockSize > maxSums {
		return nil, fmt.Errorf("%w: checksums of [%d, +%d) in %d-byte blocks of a %d-byte disk", ErrInvalid, req.Offset, req.Length, req.BlockSize, size)
	}
	buf := make([]byte, req.BlockSize)
	var out []string
	for off := req.Offset; off < req.Offset+req.Length; off += req.BlockSize {
		n := min(req.BlockSize, req.Offset+req.Length-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return nil, err
		}
		sum := blake3.Sum256(buf[:n])
		out = append(out, fmt.Sprintf("%x", sum[:]))
	}
	return out, nil
}

// status maps package errors to problem documents.
func problemFor(err error) error {
	var peer *client.Error // the other host's refusal, passed on by type
	if errors.As(err, &peer) {
		status := peer.Status
		if status == http.StatusUnauthorized {
			status = http.StatusForbidden // the peer refused us, not the caller
		}
		return api.NewProblem(status, peer.Type, err.Error())
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return api.NewProblem(http.StatusNotFound, wire.ProblemReplicationNotFound, err.Error())
	case errors.Is(err, ErrRootMismatch):
		return api.NewProblem(http.StatusConflict, wire.ProblemRootMismatch, err.Error())
	case errors.Is(err, disk.ErrNoTree):
		return api.NewProblem(http.StatusConflict, wire.ProblemNoTree, err.Error())
	case errors.Is(err, ErrSplitBrain):
		return api.NewProblem(http.StatusConflict, wire.ProblemSplitBrain, err.Error())
	case errors.Is(err, ErrState):
		return api.NewProblem(http.StatusConflict, wire.ProblemReplicationState, err.Error())
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrBadFrame):
		return api.NewProblem(http.StatusBadRequest, wire.ProblemInvalidRequest, err.Error())
	}
	return err
}
