package disk

import (
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

func FuzzDecodeMeta(f *testing.F) {
	m := &diskMeta{Name: "d", Size: 1 << 20, Grain: 4096, Gen: 1, Layers: []layerMeta{{ID: 0, Data: flatName}, {ID: 1, Data: "delta-1.raw", Map: "delta-1.1.map"}},
		Snapshots: []snapMeta{{ID: "s", Layer: 0}}, CBT: &cbtMeta{Checkpoint: "cbt.1.ckpt"}, Merge: &mergeMeta{Child: 1, Parent: 0}}
	f.Add(m.encode())
	f.Add([]byte("BWDISK01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMeta("f", b); err == nil {
			if err := m.validate(); err != nil {
				t.Fatalf("decoded meta fails validation: %v", err)
			}
			m.clone().encode()
		}
	})
}

func FuzzDecodeMap(f *testing.F) {
	l := newLayer(1, nil, false)
	l.set(3, 70000, present)
	l.set(100000, 100010, zeroed)
	f.Add(l.encodeMap(4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		l := newLayer(1, nil, false)
		if err := l.decodeMap("f", 4096, b); err == nil {
			if err := l.check(1 << 32); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzApplyRecord(f *testing.F) {
	l := newLayer(7, nil, false)
	l.set(1, 5, present)
	l.set(9, 12, zeroed)
	rec, _, _ := l.takeRecord()
	f.Add(rec)
	f.Add([]byte{7, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		target := newLayer(7, nil, false)
		target.mu.present = roaring.BitmapOf(2, 3)
		if applyRecord(b, map[uint64]*layer{7: target}) == nil {
			if err := target.check(1 << 32); err != nil {
				t.Fatal(err)
			}
		}
	})
}
