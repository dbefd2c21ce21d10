package replica

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	wire "github.com/blockwise/blockwise/api"
	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/disk"
)

// sourceState is a source's group file (DATASTORE/replication/NAME.json).
type sourceState struct {
	Config Config `json:"config"`
	// Acked is the target's last complete point as the source knows it,
	// with the source snapshots it came from (never deleted while it is
	// the last one: invariant R6) and their change IDs.
	Acked   *wire.ReplicationPoint `json:"acked,omitempty"`
	Changes map[string]string      `json:"changes,omitempty"`
	// BaseSeq is the target's last point at create (an older replica).
	BaseSeq  uint64    `json:"baseSeq,omitempty"`
	Inflight *inflight `json:"inflight,omitempty"`
	Paused   bool      `json:"paused,omitempty"`
	// Halt is why cycles stopped: failed-over, split-brain, demoted.
	Halt   string            `json:"halt,omitempty"`
	Cycles []wire.CycleStats `json:"cycles,omitempty"`
	Events []string          `json:"events,omitempty"`
	// Violations counts RPO violations (transitions into violation).
	Violations int `json:"violations,omitempty"`
}

// inflight is the cycle in progress: written before its snapshots are
// taken (intent), so a restart finds and resumes or replaces them.
type inflight struct {
	Cycle   string            `json:"cycle"`
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Snapped bool              `json:"snapped"`
	Changes map[string]string `json:"changes,omitempty"`
	Resumed bool              `json:"resumed,omitempty"`
}

func snapName(group string, seq uint64) string {
	return "rep-" + group + "-" + strconv.FormatUint(seq, 10)
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// group is a source group and its runner.
type group struct {
	svc     *Service
	cycleMu sync.Mutex // one cycle at a time (runner, sync, planned failover)
	mu      sync.Mutex // guards st and the fields below
	st      sourceState
	peer    *client.Client
	lastErr error
	next    time.Time
	syncing bool
	wake    chan struct{}
	limiter *rate.Limiter
	// wasViolated: the RPO was violated at the last check.
	wasViolated bool
	stop        context.CancelFunc // ends the runner
	done        chan struct{}
}

// peerClient is the target's API client: TLS verified against the
// group's CA (the system roots without one), its replication token.
func peerClient(c Config) (*client.Client, error) {
	o := client.Options{Token: c.Token}
	if c.CACert != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.CACert)) {
			return nil, fmt.Errorf("%w: the target CA holds no PEM certificate", ErrInvalid)
		}
		o.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return client.New(c.Target, o)
}

func (g *group) save() error { return g.svc.sources.save(g.st.Config.Name, &g.st) }

func (g *group) event(format string, a ...any) {
	msg := time.Now().UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, a...)
	g.st.Events = append(g.st.Events, msg)
	if len(g.st.Events) > 20 {
		g.st.Events = g.st.Events[len(g.st.Events)-20:]
	}
	g.svc.log.Info("replication", "group", g.st.Config.Name, "event", fmt.Sprintf(format, a...))
}

// cycle runs one cycle to its commit (or resumes the one in flight).
func (g *group) cycle(ctx context.Context) error {
	g.cycleMu.Lock()
	defer g.cycleMu.Unlock()
	g.mu.Lock()
	if g.st.Halt != "" {
		defer g.mu.Unlock()
		return fmt.Errorf("%w: group %s is %s", ErrState, g.st.Config.Name, g.st.Halt)
	}
	g.syncing = true
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.syncing = false; g.mu.Unlock() }()
	start := time.Now()
	in, err := g.prepare(ctx)
	if err != nil {
		return err
	}
	rep, err := g.peer.BeginCycle(ctx, g.st.Config.Name, wire.BeginCycleRequest{Cycle: in.Cycle, Seq: in.Seq, Base: g.ackedSeq()})
	if errors.Is(err, client.ErrReplicationState) {
		return g.halted(ctx, err)
	}
	if err != nil {
		return err
	}
	stats := wire.CycleStats{Seq: in.Seq, Started: start, Full: g.st.Acked == nil, Resumed: in.Resumed}
	if last := lastSeq(rep); last < in.Seq {
		if err := g.sendAll(ctx, in, rep, &stats); err != nil {
			g.markResumable()
			return err
		}
		roots, err := g.sourceRoots(ctx, in)
		if err != nil {
			return err
		}
		if _, err := g.peer.CommitCycle(ctx, g.st.Config.Name, in.Cycle, wire.CommitCycleRequest{Time: in.Time, Roots: roots}); err != nil {
			if errors.Is(err, client.ErrRootMismatch) {
				g.mu.Lock()
				g.event("point %d refused by the target: %v (the cycle is resent whole)", in.Seq, err)
				g.mu.Unlock()
			}
			g.markResumable()
			return err
		}
	}
	return g.finish(ctx, in, stats)
}

func (g *group) markResumable() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.st.Inflight != nil && !g.st.Inflight.Resumed {
		g.st.Inflight.Resumed = true
		g.save()
	}
}

func lastSeq(r *wire.Replica) uint64 {
	if n := len(r.Points); n > 0 {
		return r.Points[n-1].Seq
	}
	return 0
}

func (g *group) ackedSeq() uint64 {
	if g.st.Acked == nil {
		return g.baseSeq()
	}
	return g.st.Acked.Seq
}

// baseSeq is the target's last point when the group was created: 0, or
// an older replica's point that a seeded group continues from.
func (g *group) baseSeq() uint64 { return g.st.BaseSeq }

// prepare returns the cycle in flight, taking the group's snapshots at
// one instant if it has none yet (intent recorded first).
func (g *group) prepare(ctx context.Context) (*inflight, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.st.Inflight == nil {
		g.st.Inflight = &inflight{Cycle: newID(), Seq: g.ackedSeq() + 1}
		if err := g.save(); err != nil {
			return nil, err
		}
	}
	in := g.st.Inflight
	if in.Snapped {
		return in, nil
	}
	id := snapName(g.st.Config.Name, in.Seq)
	names := g.sourceNames()
	for _, n := range names { // a crash between intent and snapshots
		d, err := g.svc.h.Disk(n)
		if err != nil {
			return nil, err
		}
		if err := deleteSnap(ctx, d, id); err != nil {
			return nil, err
		}
	}
	in.Cycle = newID() // new data: the target must not resume an older staging
	infos, err := g.svc.h.SnapshotGroup(ctx, names, id, "replication "+g.st.Config.Name)
	if err != nil {
		return nil, err
	}
	in.Time, in.Snapped, in.Changes = time.Now().UTC(), true, map[string]string{}
	for i, n := range names {
		in.Changes[n] = infos[i].ChangeID
	}
	return in, g.save()
}

func (g *group) sourceNames() []string {
	var out []string
	for _, d := range g.st.Config.Disks {
		out = append(out, d.Source)
	}
	return out
}

// finish records the point as acknowledged, then deletes the snapshots
// of the point before it: the last acknowledged point's stay (R6).
func (g *group) finish(ctx context.Context, in *inflight, stats wire.CycleStats) error {
	g.mu.Lock()
	old := g.st.Acked
	p := &wire.ReplicationPoint{Seq: in.Seq, Time: in.Time, Snapshots: map[string]string{}}
	for _, n := range g.sourceNames() {
		p.Snapshots[n] = snapName(g.st.Config.Name, in.Seq)
	}
	g.st.Acked, g.st.Changes, g.st.Inflight = p, in.Changes, nil
	stats.Seconds = time.Since(stats.Started).Seconds()
	if stats.Seconds > 0 {
		stats.Rate = float64(stats.Bytes) / stats.Seconds
	}
	g.st.Cycles = append(g.st.Cycles, stats)
	if len(g.st.Cycles) > 10 {
		g.st.Cycles = g.st.Cycles[len(g.st.Cycles)-10:]
	}
	g.lastErr = nil
	err := g.save()
	g.mu.Unlock()
	if err != nil || old == nil {
		return err
	}
	for n := range old.Snapshots {
		if d, err := g.svc.h.Disk(n); err == nil {
			sweep(d, "rep-"+g.st.Config.Name+"-", func(id string) bool { return id != p.Snapshots[n] })
		}
	}
	return nil
}

// halted handles a target that refuses cycles: failed over, and
// split-brain when this side took writes since the point too (R7).
func (g *group) halted(ctx context.Context, cause error) error {
	rep, err := g.peer.Replica(ctx, g.st.Config.Name)
	if err != nil {
		return errors.Join(cause, err)
	}
	if rep.State != targetFailedOver {
		return cause
	}
	mine, err := g.localWrites(ctx)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Halt = wire.ReplicationFailedOver
	if mine && rep.WritesSincePoint {
		g.st.Halt = wire.ReplicationSplitBrain
		g.event("split-brain: both sides took writes since point %d; resync --winner SITE decides", g.ackedSeq())
	} else {
		g.event("the target failed over at point %d: cycles stop (reprotect on the target reverses them)", g.ackedSeq())
	}
	if err := g.save(); err != nil {
		return err
	}
	if g.st.Halt == wire.ReplicationSplitBrain {
		return fmt.Errorf("%w (group %s)", ErrSplitBrain, g.st.Config.Name)
	}
	return fmt.Errorf("%w: the target of %s failed over", ErrState, g.st.Config.Name)
}

// localWrites reports whether the source disks took writes after the
// last acknowledged point.
func (g *group) localWrites(ctx context.Context) (bool, error) {
	if g.st.Acked == nil {
		return false, nil
	}
	for n, s := range g.st.Acked.Snapshots {
		d, err := g.svc.h.Disk(n)
		if err != nil {
			return false, err
		}
		areas, err := changedSince(ctx, d, s)
		if err != nil {
			return false, err
		}
		if len(areas) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// batchBytes is the data of one batch: the unit of acknowledgment, so
// an interruption resends at most this much per disk (R3). A cycle's
// batches hold about a 64th of its data, within these bounds.
const (
	minBatch = 512 << 10
	maxBatch = 8 << 20
)

func batchSize(areas []wire.Area) int64 {
	return min(maxBatch, max(minBatch, sumAreas(areas)/64))
}

func sumAreas(areas []wire.Area) int64 {
	var total int64
	for _, a := range areas {
		total += a.Length
	}
	return total
}

// progress reports a cycle's bytes to the task that runs it.
type progress struct {
	set         func(done, total int64)
	done, total int64
}

type progressKey struct{}

// withProgress makes the cycles run with ctx report to set.
func withProgress(ctx context.Context, set func(done, total int64)) context.Context {
	return context.WithValue(ctx, progressKey{}, &progress{set: set})
}

func progressOf(ctx context.Context) *progress {
	p, _ := ctx.Value(progressKey{}).(*progress)
	return p
}

// sendAll sends every disk's delta from the target's progress.
func (g *group) sendAll(ctx context.Context, in *inflight, rep *wire.Replica, stats *wire.CycleStats) error {
	for _, rd := range g.st.Config.Disks {
		from := int64(0)
		if rep.Staging != nil && rep.Staging.Cycle == in.Cycle {
			from = rep.Staging.Progress[rd.Target]
		}
		if from > 0 {
			stats.Resumed = true
		}
		if err := g.sendDisk(ctx, in, rd, from, rep.Dirty[rd.Target], stats); err != nil {
			return fmt.Errorf("disk %s: %w", rd.Source, err)
		}
	}
	return nil
}

// sendDisk sends one disk's areas at or after from in batches.
func (g *group) sendDisk(ctx context.Context, in *inflight, rd wire.ReplicationDisk, from int64, dirty []wire.Area, stats *wire.CycleStats) error {
	d, err := g.svc.h.Disk(rd.Source)
	if err != nil {
		return err
	}
	s, err := d.OpenSnapshot(snapName(g.st.Config.Name, in.Seq))
	if err != nil {
		return err
	}
	defer s.Close()
	areas, err := g.areas(ctx, s, rd, from)
	if err != nil {
		return err
	}
	areas = clip(union(areas, dirty), from)
	if p := progressOf(ctx); p != nil {
		p.total += sumAreas(areas)
	}
	b := &batcher{g: g, in: in, rd: rd, s: s, from: from, stats: stats, limit: batchSize(areas), prog: progressOf(ctx)}
	for _, a := range areas {
		if err := b.add(ctx, a); err != nil {
			return err
		}
	}
	return b.send(ctx, s.Size())
}

// areas is what a disk must send: CBT since the acknowledged point; all
// allocated areas at first; differing blocks when seeding.
func (g *group) areas(ctx context.Context, s *disk.Snapshot, rd wire.ReplicationDisk, from int64) ([]wire.Area, error) {
	if g.st.Acked != nil {
		return areasOf(s, g.st.Changes[rd.Source])
	}
	if g.st.Config.Seed {
		return g.seedAreas(ctx, s, rd, from)
	}
	return areasOf(s, "*")
}

// seedBlock is the unit of the seed comparison.
const seedBlock = 64 << 10

// seedAreas compares the snapshot's blocks with the target disk's.
func (g *group) seedAreas(ctx context.Context, s *disk.Snapshot, rd wire.ReplicationDisk, from int64) ([]wire.Area, error) {
	if out, ok, err := g.seedLeaves(ctx, s, rd, from); ok || err != nil {
		return out, err
	}
	var out []wire.Area
	step := int64(seedBlock * 4096)
	for off := from / seedBlock * seedBlock; off < s.Size(); off += step {
		n := min(step, s.Size()-off)
		theirs, err := g.peer.Checksums(ctx, g.st.Config.Name, rd.Target, wire.ChecksumsRequest{Offset: off, Length: n, BlockSize: seedBlock})
		if err != nil {
			return nil, err
		}
		mine, err := blockSums(s, s.Size(), wire.ChecksumsRequest{Offset: off, Length: n, BlockSize: seedBlock})
		if err != nil {
			return nil, err
		}
		for i := range mine {
			if i >= len(theirs.Sums) || mine[i] != theirs.Sums[i] {
				a := off + int64(i)*seedBlock
				out = union(out, []wire.Area{{Start: a, Length: min(seedBlock, s.Size()-a)}})
			}
		}
	}
	return out, nil
}

// union merges two sorted area lists.
func union(a, b []wire.Area) []wire.Area {
	all := append(append([]wire.Area(nil), a...), b...)
	sort.Slice(all, func(i, j int) bool { return all[i].Start < all[j].Start })
	var out []wire.Area
	for _, x := range all {
		if k := len(out); k > 0 && x.Start <= out[k-1].Start+out[k-1].Length {
			out[k-1].Length = max(out[k-1].Length, x.Start+x.Length-out[k-1].Start)
			continue
		}
		out = append(out, x)
	}
	return out
}

// clip drops what lies before from.
func clip(areas []wire.Area, from int64) []wire.Area {
	var out []wire.Area
	for _, a := range areas {
		if a.Start+a.Length <= from {
			continue
		}
		if a.Start < from {
			a.Length -= from - a.Start
			a.Start = from
		}
		out = append(out, a)
	}
	return out
}

// batcher gathers frames into batches of about batchBytes.
type batcher struct {
	g     *group
	in    *inflight
	rd    wire.ReplicationDisk
	s     *disk.Snapshot
	from  int64 // the batch's start (the target's progress)
	buf   []byte
	data  int64
	limit int64 // batch size
	prog  *progress
	stats *wire.CycleStats
}

const frameMax = 256 << 10

func (b *batcher) add(ctx context.Context, a wire.Area) error {
	for off := a.Start; off < a.Start+a.Length; {
		n := min(frameMax, a.Start+a.Length-off, b.limit-b.data)
		data := make([]byte, n)
		if _, err := b.s.ReadAt(data, off); err != nil {
			return err
		}
		if allZero(data) {
			b.buf = appendFrame(b.buf, frameZero, off, nil, n)
		} else {
			b.buf = appendFrame(b.buf, frameData, off, data, n)
		}
		b.data += n
		off += n
		if b.data >= b.limit {
			if err := b.send(ctx, off); err != nil {
				return err
			}
		}
	}
	return nil
}

func allZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// send posts the batch covering [from, to) and moves from to the
// target's acknowledgment.
func (b *batcher) send(ctx context.Context, to int64) error {
	cfg := b.g.st.Config
	body, z := b.buf, cfg.Compression == "zstd"
	if z {
		body = b.g.svc.encoder.EncodeAll(b.buf, make([]byte, 0, len(b.buf)/2))
	}
	if err := b.g.throttle(ctx, len(body)); err != nil {
		return err
	}
	ack, err := b.g.peer.SendBatch(ctx, cfg.Name, b.in.Cycle, b.rd.Target, b.from, to, body, z)
	if err != nil {
		return err
	}
	b.g.svc.wireBytes.Add(int64(len(body)))
	b.stats.WireBytes += int64(len(body))
	b.stats.Bytes += b.data
	if b.prog != nil {
		b.prog.done += b.data
		b.prog.set(b.prog.done, b.prog.total)
	}
	b.from, b.buf, b.data = ack, b.buf[:0], 0
	return nil
}

// throttle waits for n bytes of the group's bandwidth limit.
func (g *group) throttle(ctx context.Context, n int) error {
	if g.st.Config.BandwidthLimit <= 0 {
		return nil
	}
	g.mu.Lock()
	if g.limiter == nil {
		lim := g.st.Config.BandwidthLimit
		g.limiter = rate.NewLimiter(rate.Limit(lim), int(min(lim, 1<<20)))
	}
	l := g.limiter
	g.mu.Unlock()
	for n > 0 {
		k := min(n, l.Burst())
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
