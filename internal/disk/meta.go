package disk

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/blockwise/blockwise/internal/metafile"
)

const (
	metaName  = "disk.meta"
	metaMagic = "BWDISK01"
	// metaVersion 2 adds "provision" (docs/format.md); a thin disk's
	// disk.meta is still written as version 1, so older binaries open it.
	metaVersion = 2
	flatName    = "flat.raw"
	lockName    = "lock"
)

// diskMeta is the body of disk.meta: the commit point of every change to
// a disk's structure. Files it does not name are garbage.
type diskMeta struct {
	UUID      string      `json:"uuid"`
	Name      string      `json:"name"`
	Size      int64       `json:"size"`
	Grain     int64       `json:"grain"`
	Created   time.Time   `json:"created"`
	Gen       uint64      `json:"gen"`
	NextID    uint64      `json:"nextId"`
	Layers    []layerMeta `json:"layers"` // bottom first
	Snapshots []snapMeta  `json:"snapshots"`
	CBT       *cbtMeta    `json:"cbt,omitempty"`
	Merge     *mergeMeta  `json:"merge,omitempty"`
	// Provision is "" (thin), ProvisionLazy or ProvisionEager (version 2).
	Provision Provision `json:"provision,omitempty"`
	// Agent is the guest agent socket of the VM using the disk, for
	// quiescing its backups (docs/format.md: older binaries ignore it).
	Agent string `json:"agent,omitempty"`
}

type layerMeta struct {
	ID   uint64 `json:"id"`
	Data string `json:"data"`
	Map  string `json:"map,omitempty"` // empty for the flat bottom layer
}

type snapMeta struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Layer       uint64    `json:"layer"` // the frozen top of the snapshot's chain
	ChangeSeq   uint64    `json:"changeSeq"`
	ChangeUUID  string    `json:"changeUuid,omitempty"` // tracking identity when taken
	Size        int64     `json:"size"`
}

type cbtMeta struct {
	Checkpoint string `json:"checkpoint"`
}

// mergeMeta records a consolidation in progress: Child merges into Parent.
type mergeMeta struct {
	Snapshot string `json:"snapshot"`
	Child    uint64 `json:"child"`
	Parent   uint64 `json:"parent"`
	Total    int64  `json:"total"` // grains to merge when it started
}

func (m *diskMeta) encode() []byte {
	body, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	v := uint16(1)
	if m.Provision != "" {
		v = 2 // an older binary would treat the disk as thin and punch holes
	}
	return metafile.Encode(metaMagic, v, body)
}

func decodeMeta(name string, data []byte) (*diskMeta, error) {
	_, body, err := metafile.Decode(name, metaMagic, metaVersion, data)
	if err != nil {
		return nil, err
	}
	m := new(diskMeta)
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, ErrCorrupt, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, ErrCorrupt, err)
	}
	return m, nil
}

func (m *diskMeta) validate() error {
	switch {
	case m.Size < 0 || m.Size%Sector != 0:
		return fmt.Errorf("size %d", m.Size)
	case m.Grain < Sector || m.Grain&(m.Grain-1) != 0:
		return fmt.Errorf("grain %d", m.Grain)
	case m.Provision != "" && m.Provision != ProvisionLazy && m.Provision != ProvisionEager:
		return fmt.Errorf("provision %q", m.Provision)
	case m.Agent != "" && ValidAgent(m.Agent) != nil:
		return fmt.Errorf("agent %q", m.Agent)
	case len(m.Layers) == 0 || m.Layers[0].Map != "":
		return fmt.Errorf("no flat bottom layer")
	case len(m.Snapshots) >= len(m.Layers)+1:
		return fmt.Errorf("%d snapshots for %d layers", len(m.Snapshots), len(m.Layers))
	}
	ids := map[uint64]int{}
	for i, l := range m.Layers {
		if !validFile(l.Data) || (i > 0 && !validFile(l.Map)) {
			return fmt.Errorf("layer %d file names", l.ID)
		}
		if _, dup := ids[l.ID]; dup {
			return fmt.Errorf("duplicate layer %d", l.ID)
		}
		ids[l.ID] = i
	}
	for _, s := range m.Snapshots {
		if _, ok := ids[s.Layer]; !ok {
			return fmt.Errorf("snapshot %s names missing layer %d", s.ID, s.Layer)
		}
	}
	if m.Merge != nil {
		c, ok1 := ids[m.Merge.Child]
		p, ok2 := ids[m.Merge.Parent]
		if !ok1 || !ok2 || c != p+1 {
			return fmt.Errorf("merge of layer %d into %d", m.Merge.Child, m.Merge.Parent)
		}
	}
	if m.CBT != nil && !validFile(m.CBT.Checkpoint) {
		return fmt.Errorf("cbt checkpoint name")
	}
	return nil
}

// validFile accepts plain file names only, so a damaged or hostile
// disk.meta cannot point outside the disk's directory.
func validFile(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func (m *diskMeta) clone() *diskMeta {
	c := *m
	c.Layers = append([]layerMeta(nil), m.Layers...)
	c.Snapshots = append([]snapMeta(nil), m.Snapshots...)
	if m.CBT != nil {
		cb := *m.CBT
		c.CBT = &cb
	}
	if m.Merge != nil {
		mg := *m.Merge
		c.Merge = &mg
	}
	return &c
}

func (m *diskMeta) snapshot(id string) (int, *snapMeta) {
	for i := range m.Snapshots {
		if m.Snapshots[i].ID == id {
			return i, &m.Snapshots[i]
		}
	}
	return -1, nil
}

func (m *diskMeta) layerIndex(id uint64) int {
	for i, l := range m.Layers {
		if l.ID == id {
			return i
		}
	}
	return -1
}

func journalName(gen uint64) string { return fmt.Sprintf("journal.%d.log", gen) }
func cbtName(gen uint64) string     { return fmt.Sprintf("cbt.%d.ckpt", gen) }
func deltaName(id uint64) string    { return fmt.Sprintf("delta-%d.raw", id) }
func mapName(id, gen uint64) string { return fmt.Sprintf("delta-%d.%d.map", id, gen) }
