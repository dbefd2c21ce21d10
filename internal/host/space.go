package host

import (
	"fmt"
	"math"
	"sync/atomic"
	"syscall"
)

// DefaultSpaceWarn is the soft threshold of datastore use (80%): above
// it the host warns in GET /v1/host, GET /v1/datastore, /metrics and its
// log, before thin disks run the file system out of space.
const DefaultSpaceWarn = 0.8

// Space is the datastore's capacity and use, and what its disks were
// promised (docs/format.md, "Thin provisioning").
type Space struct {
	Path                        string
	Capacity, Used, Free        int64
	Provisioned                 int64 // sum of the disks' sizes
	Disks                       int
	Overcommit, UsedRatio, Warn float64
	Warning                     string // set when UsedRatio ≥ Warn
}

// spaceWarn holds the threshold as float64 bits (SetSpaceWarn).
type spaceWarn struct{ bits atomic.Uint64 }

// SetSpaceWarn sets the soft threshold, a ratio in (0, 1]; outside it
// the default stays.
func (h *Host) SetSpaceWarn(ratio float64) error {
	if !(ratio > 0 && ratio <= 1) {
		return fmt.Errorf("space warning threshold %v: want a ratio in (0, 1]", ratio)
	}
	h.warn.bits.Store(math.Float64bits(ratio))
	return nil
}

// SpaceWarn is the soft threshold in force.
func (h *Host) SpaceWarn() float64 {
	if b := h.warn.bits.Load(); b != 0 {
		return math.Float64frombits(b)
	}
	return DefaultSpaceWarn
}

// Space measures the datastore now. It opens no disk: a disk's size is
// its open handle's, or else its disk.meta's.
func (h *Host) Space() (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(h.ds.Dir(), &st); err != nil {
		return Space{}, fmt.Errorf("datastore %s: statfs: %w", h.ds.Dir(), err)
	}
	bs := int64(st.Bsize)
	s := Space{Path: h.ds.Dir(), Capacity: int64(st.Blocks) * bs, Free: int64(st.Bavail) * bs, Warn: h.SpaceWarn()}
	s.Used = s.Capacity - int64(st.Bfree)*bs
	names, err := h.ds.List()
	if err != nil {
		return Space{}, err
	}
	for _, n := range names {
		size, err := h.diskSize(n)
		if err != nil {
			continue // removed meanwhile, or unreadable: not a promise
		}
		s.Provisioned += size
		s.Disks++
	}
	if s.Capacity > 0 {
		s.Overcommit = float64(s.Provisioned) / float64(s.Capacity)
		s.UsedRatio = float64(s.Used) / float64(s.Capacity)
	}
	if s.UsedRatio >= s.Warn {
		s.Warning = fmt.Sprintf("datastore %.1f%% full (threshold %.0f%%): %d of %d bytes free, disks provisioned %.2fx its capacity",
			100*s.UsedRatio, 100*s.Warn, s.Free, s.Capacity, s.Overcommit)
	}
	return s, nil
}

// Offloads describes the host's offloads (offload.go) for GET /v1/host.
func (h *Host) Offloads() Offload { return Offloads(h.ds) }

func (h *Host) diskSize(name string) (int64, error) {
	h.mu.Lock()
	d, ok := h.mu.disks[name]
	h.mu.Unlock()
	if ok {
		return d.Size(), nil
	}
	return h.ds.DiskSize(name)
}
