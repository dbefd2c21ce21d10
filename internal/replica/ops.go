package replica

import (
	"context"
	"errors"
	"fmt"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/internal/disk"
)

// planned is a planned migration run from the source: writes to the
// source disks stop (the host refuses them), a final cycle lands, the
// target promotes exactly that point; then this side is demoted. Any
// error before the target promoted undoes the stop: both sides stay as
// they were (R9).
func (g *group) planned(ctx context.Context) (err error) {
	names := g.sourceNames()
	for _, n := range names {
		g.svc.h.Protect(n, "planned migration of "+g.st.Config.Name)
	}
	defer func() {
		if err != nil {
			for _, n := range names {
				g.svc.h.Unprotect(n)
			}
		}
	}()
	if err := g.cycle(ctx); err != nil {
		return fmt.Errorf("final sync: %w", err)
	}
	g.mu.Lock()
	point := g.st.Acked.Seq
	g.mu.Unlock()
	if _, err := g.peer.ReplicaAction(ctx, g.st.Config.Name, "promote", wire.FailoverRequest{Point: point}); err != nil {
		return fmt.Errorf("target failover: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Halt = wire.ReplicationDemoted
	g.event("planned migration done: the target runs point %d; the source disks stay read-only", point)
	return g.save()
}

// resync ends a split-brain (or a failover the source wants undone):
// winner "source" demotes the target, which keeps its own writes in a
// snapshot and returns to the common point (R7); winner "target" demotes
// this side (yield) for the target's reprotect.
func (g *group) resync(ctx context.Context, winner string) error {
	g.mu.Lock()
	halt := g.st.Halt
	g.mu.Unlock()
	if halt != wire.ReplicationSplitBrain && halt != wire.ReplicationFailedOver {
		return fmt.Errorf("%w: group %s is not split or failed over", ErrState, g.st.Config.Name)
	}
	switch winner {
	case "source":
	case "target":
		return g.yield(ctx)
	default:
		return fmt.Errorf("%w: winner %q: want source or target", ErrInvalid, winner)
	}
	if _, err := g.peer.ReplicaAction(ctx, g.st.Config.Name, "demote", nil); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Halt = ""
	g.event("resync: the source won; the target kept its writes in a snapshot and follows again")
	if err := g.save(); err != nil {
		return err
	}
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return nil
}

// yield is resync --winner target on the source: its writes since the
// last point are kept in a snapshot (R7), its disks stop taking writes,
// the group is demoted; `reprotect` on the target then reverses the
// group, sending back what either side changed since the point.
func (g *group) yield(ctx context.Context) error {
	keep := keptName()
	for _, n := range g.sourceNames() {
		g.svc.h.Protect(n, "lost the resync of "+g.st.Config.Name)
		d, err := g.svc.h.Disk(n)
		if err != nil {
			return err
		}
		if _, err := snapshotIdle(ctx, d, keep, "writes of the losing side, kept by resync"); err != nil && !errors.Is(err, disk.ErrExists) {
			return err
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Halt = wire.ReplicationDemoted
	g.event("resync: the target won; this side's writes are kept in %s; run `blockwise replication reprotect %s` on the target", keep, g.st.Config.Name)
	return g.save()
}

// reprotect runs on the host that failed over: its replica group becomes
// a source group toward the old source, which becomes the replica at the
// common point (becomeReplica), keeping its later writes in a snapshot.
// The first cycle sends what either side changed since that point.
func (s *Service) reprotect(ctx context.Context, grp string, req wire.ReprotectRequest) error {
	st, err := s.target.get(grp)
	if err != nil {
		return err
	}
	if st.State != targetFailedOver {
		return fmt.Errorf("%w: replica %s is %s, not failed over", ErrState, grp, st.State)
	}
	last := st.last()
	c, err := configFrom(wire.CreateReplicationRequest{Name: grp, Disks: reversed(st.Disks), Target: req.Target,
		Token: req.Token, CACert: req.CACert, RPO: req.RPO, Keep: st.Keep})
	if err != nil {
		return err
	}
	peer, err := peerClient(c)
	if err != nil {
		return err
	}
	put := wire.PutReplicaRequest{Reverse: last.Seq, Keep: st.Keep}
	for _, rd := range st.Disks {
		put.Disks = append(put.Disks, wire.ReplicaDisk{Name: rd.Source, Size: rd.Size, Source: rd.Name})
	}
	if _, err := peer.PutReplica(ctx, grp, put); err != nil {
		return fmt.Errorf("old source %s: %w", req.Target, err)
	}
	g := &group{svc: s, peer: peer, st: sourceState{Config: c, Acked: &last, Changes: map[string]string{}}}
	for _, rd := range st.Disks {
		d, err := s.h.Disk(rd.Name)
		if err != nil {
			return err
		}
		si, ok := snapInfo(d, last.Snapshots[rd.Name])
		if !ok {
			return fmt.Errorf("point %d of %s: %w", last.Seq, rd.Name, disk.ErrNotFound)
		}
		g.st.Changes[rd.Name] = si.ChangeID
	}
	g.event("reprotect: reversed toward %s from point %d", req.Target, last.Seq)
	if err := g.save(); err != nil {
		return err
	}
	if err := s.target.store.remove(grp); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startGroup(g)
	return nil
}

func reversed(ds []wire.ReplicaDisk) []wire.ReplicationDisk {
	var out []wire.ReplicationDisk
	for _, d := range ds {
		out = append(out, wire.ReplicationDisk{Source: d.Name, Target: d.Source})
	}
	return out
}

// becomeReplica turns this host's source group into the replica of a
// reprotect (PUT with Reverse): its point Reverse becomes the base, the
// writes it took after it are kept in a snapshot and listed as Dirty, so
// the first reverse cycle overwrites them too (R7).
func (s *Service) becomeReplica(ctx context.Context, grp string, req wire.PutReplicaRequest) (*replicaState, error) {
	g, err := s.group(grp)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	acked := g.st.Acked
	g.mu.Unlock()
	if acked == nil || acked.Seq != req.Reverse {
		return nil, fmt.Errorf("%w: this host's last point of %s is not %d", ErrState, grp, req.Reverse)
	}
	g.stop()
	<-g.done
	g.cycleMu.Lock()
	defer g.cycleMu.Unlock()
	st := &replicaState{Replica: wire.Replica{Group: grp, State: targetReceiving, Disks: req.Disks, Dirty: map[string][]wire.Area{}},
		Base: wire.ReplicationPoint{Seq: acked.Seq, Time: acked.Time, Snapshots: acked.Snapshots}, Keep: req.Keep}
	keep := keptName()
	for _, rd := range req.Disks {
		s.h.Protect(rd.Name, "replica of "+grp)
		d, err := s.h.Disk(rd.Name)
		if err != nil {
			return nil, err
		}
		dirty, err := changedSince(ctx, d, acked.Snapshots[rd.Name])
		if err != nil {
			return nil, err
		}
		if len(dirty) > 0 {
			if _, err := snapshotIdle(ctx, d, keep, "writes after the reprotect point, kept"); err != nil {
				return nil, err
			}
		}
		st.Dirty[rd.Name] = dirty
	}
	s.target.mu.Lock()
	defer s.target.mu.Unlock()
	if err := s.target.save(st); err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.groups, grp)
	s.mu.Unlock()
	return st, s.sources.remove(grp)
}
