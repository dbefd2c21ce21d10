package host

import (
	"sync"

	"github.com/blockwise/blockwise/internal/labels"
)

// labelStore is the datastore's disk labels, opened on first use.
type labelStore struct {
	once sync.Once
	s    *labels.Store
	err  error
}

// Labels is the datastore's disk labels (internal/labels), read from
// DATASTORE/disk-labels on first use.
func (h *Host) Labels() (*labels.Store, error) {
	h.labels.once.Do(func() { h.labels.s, h.labels.err = labels.Open(h.ds.Dir()) })
	return h.labels.s, h.labels.err
}

// forgetLabels drops a name's labels when its disk is removed or a new
// disk takes the name: labels describe one disk, not a name
// (docs/labels.md invariant 3).
func (h *Host) forgetLabels(name string) error {
	s, err := h.Labels()
	if err != nil {
		return err
	}
	return s.Delete(name)
}
