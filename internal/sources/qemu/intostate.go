package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/metafile"
)

// The state file of a restore into a drive (docs/format.md, "Restore
// into a VM's drive: state file"): written before the VM is paused and
// at each step after (R1), removed when the restore returns (R2), so a
// file whose process is gone is a restore that was killed; a corrupt one
// fails the open (R5).
const (
	intoMagic   = "BWINTOST"
	intoVersion = 1
	intoPrefix  = "blockwise-restore-"
	intoSuffix  = ".state"
)

// Steps of a restore into a drive, as its state file records them.
const (
	StepPausing    = "pausing"    // state written, VM about to be paused
	StepExporting  = "exporting"  // NBD server started, overlay written
	StepCommitting = "committing" // the overlay is going over the drive
)

// intoState is what a killed restore left for the next run: enough to
// finish or undo it and resume the VM only if it ran before.
type intoState struct {
	Key        string `json:"key"`   // the VM (Source.key)
	ID         string `json:"id"`    // bw-PID-rN: names exports, overlay, job
	Node       string `json:"node"`  // the drive's node
	Point      string `json:"point"` // the restore point written
	Dir        string `json:"dir"`   // private directory (overlay, NBD socket), maybe remote
	WasRunning bool   `json:"wasRunning"`
	Step       string `json:"step"`
	// The point's tree root (hex), leaf block size and size: a recovery
	// that finishes the commit hashes the drive against them, as the
	// restore would have (absent for a point without a tree).
	Root      string `json:"root,omitempty"`
	BlockSize uint32 `json:"blockSize,omitempty"`
	Size      uint64 `json:"size,omitempty"`
}

// suffix is PID-rN, the part of every QEMU name after its prefix.
func (st *intoState) suffix() string { return st.ID[3:] }

func (st *intoState) path(dir string) string {
	return filepath.Join(dir, intoPrefix+st.ID+intoSuffix)
}

// save writes the state durably (temp file, fsync, rename, fsync dir).
func (st *intoState) save(dir string) error {
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := fsutil.WriteAtomic(st.path(dir), metafile.Encode(intoMagic, intoVersion, body)); err != nil {
		return fmt.Errorf("record the restore's state: %w", err)
	}
	return nil
}

func (st *intoState) remove(dir string) error {
	err := os.Remove(st.path(dir))
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return fsutil.SyncDir(dir)
	}
	return err
}

// decodeIntoState reads one state file.
func decodeIntoState(name string, data []byte) (*intoState, error) {
	_, body, err := metafile.Decode(name, intoMagic, intoVersion, data)
	if err != nil {
		return nil, err
	}
	st := &intoState{}
	if err := json.Unmarshal(body, st); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, metafile.ErrCorrupt, err)
	}
	if !strings.HasPrefix(st.ID, "bw-") || st.Node == "" {
		return nil, fmt.Errorf("%s: %w: id %q node %q", name, metafile.ErrCorrupt, st.ID, st.Node)
	}
	return st, nil
}

// deadStates are the state files in dir of this VM's restores whose
// process no longer exists. A corrupt file is an error: it names a
// restore whose VM may be paused.
func deadStates(dir, key string) ([]*intoState, error) {
	names, err := filepath.Glob(filepath.Join(dir, intoPrefix+"bw-*"+intoSuffix))
	if err != nil {
		return nil, err
	}
	var out []*intoState
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		st, err := decodeIntoState(name, data)
		if err != nil {
			return nil, err
		}
		if _, dead := deadOwner(st.ID, "bw-"); dead && st.Key == key {
			out = append(out, st)
		}
	}
	return out, nil
}

// PendingRestores reports whether dir holds state files of killed
// restores into the VM named key (a cheap look before a QMP connection).
func PendingRestores(dir, key string) bool {
	sts, err := deadStates(dir, key)
	return err != nil || len(sts) > 0
}
