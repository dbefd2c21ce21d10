package repo

import (
	"encoding/json"
	"fmt"
	"time"
)

// Meta describes the disk a backup is taken of.
type Meta struct {
	Disk     string    `json:"disk"`      // disk name
	DiskUUID string    `json:"disk_uuid"` // source disk identity
	ChangeID string    `json:"change_id"` // CBT change ID the backup was read at
	Size     uint64    `json:"size"`      // image size in bytes
	Time     time.Time `json:"time"`      // snapshot time
	// Changed is what the host reported changed since the parent's change
	// ID (for a full backup: allocated), in bytes; absent before it was
	// recorded.
	Changed uint64 `json:"changed_bytes,omitempty"`
	// Consistency of the point: "application" (the guest was quiesced),
	// "crash", or absent when the source did not say; and why.
	Consistency       string `json:"consistency,omitempty"`
	ConsistencyReason string `json:"consistency_reason,omitempty"`
}

// Stats are counters of one backup.
type Stats struct {
	BytesRead    uint64        `json:"bytes_read"`    // bytes passed to PutChunk
	Chunks       uint64        `json:"chunks"`        // PutChunk calls
	ZeroChunks   uint64        `json:"zero_chunks"`   // all-zero chunks (not stored)
	NewChunks    uint64        `json:"new_chunks"`    // chunks not already in the repository
	NewBytes     uint64        `json:"new_bytes"`     // plaintext bytes of new chunks
	NewPages     uint64        `json:"new_pages"`     // index pages written
	StoredBytes  uint64        `json:"stored_bytes"`  // all bytes written: packs, index, manifest
	PacksWritten uint64        `json:"packs_written"` //
	Duration     time.Duration `json:"duration"`      // NewWriter to Commit
}

// Manifest is a restore point. It is written last: its presence is the
// commit of a backup.
type Manifest struct {
	ID        ID     `json:"-"` // hash of the stored file; set on load/commit
	Meta             // disk identity and size
	Parent    *ID    `json:"parent,omitempty"` // manifest this one was based on
	ChunkSize uint32 `json:"chunk_size"`
	PageSlots uint32 `json:"page_slots"`
	Pages     []ID   `json:"pages"` // root list of the slot tree
	Stats     Stats  `json:"stats"`
	// Tree is the point's hash tree; nil for points written before trees
	// were kept ("no root"), which still restore and check.
	Tree *TreeRef `json:"tree,omitempty"`
}

// Slots is the number of chunk slots of the image.
func (m *Manifest) Slots() uint64 { return ceilDiv(m.Size, uint64(m.ChunkSize)) }

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// pageLen is the number of slots page i covers.
func (m *Manifest) pageLen(i uint64) int {
	return int(min(uint64(m.PageSlots), m.Slots()-i*uint64(m.PageSlots)))
}

const manifestMagic = "BWMF"

// maxImageSize bounds sizes read from outside (1 EiB).
const maxImageSize = 1 << 60

func encodeManifest(c *crypter, m *Manifest) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return sealEnvelope(c, manifestMagic, body), nil
}

// decodeManifest opens and validates a manifest against the repo config.
func decodeManifest(c *crypter, cfg *Config, data []byte) (*Manifest, error) {
	body, err := openEnvelope(c, manifestMagic, data)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, ErrCorrupt)
	}
	if m.ChunkSize != cfg.ChunkSize || m.PageSlots != cfg.PageSlots || m.Size > maxImageSize {
		return nil, fmt.Errorf("manifest: geometry %d/%d/%d does not match repository: %w", m.ChunkSize, m.PageSlots, m.Size, ErrCorrupt)
	}
	if uint64(len(m.Pages)) != ceilDiv(m.Slots(), uint64(m.PageSlots)) {
		return nil, fmt.Errorf("manifest: %d pages for %d slots: %w", len(m.Pages), m.Slots(), ErrCorrupt)
	}
	m.ID = fileID(data)
	return &m, nil
}
