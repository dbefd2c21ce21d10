package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAppendReplayTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	l, err := Create(p, 7)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{1, []byte("a")}, {2, nil}, {3, bytes.Repeat([]byte{9}, 1000)}}
	if err := l.Append(want...); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A torn tail: half a record.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(Encode(4, []byte("torn"))[:6])
	f.Close()

	l, recs, err := Open(p, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[2].Type != 3 || !bytes.Equal(recs[2].Payload, want[2].Payload) {
		t.Fatalf("replayed %d records", len(recs))
	}
	// Appending after a torn tail must produce a clean journal.
	if err := l.Append(Record{5, []byte("after")}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	recs, err = ReadAll(p, 7)
	if err != nil || len(recs) != 4 || recs[3].Type != 5 {
		t.Fatalf("after torn tail: %d records, %v", len(recs), err)
	}
	if _, err := ReadAll(p, 8); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong generation: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(append(Encode(1, []byte("x")), Encode(2, nil)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, n := Parse(b)
		if n > len(b) {
			t.Fatal("span beyond input")
		}
		var re []byte
		for _, r := range recs {
			re = append(re, Encode(r.Type, r.Payload)...)
		}
		if !bytes.Equal(re, b[:n]) {
			t.Fatal("re-encoding differs")
		}
	})
}
