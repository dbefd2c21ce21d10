package client

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestLeaseRecordLayout pins the byte layout docs/format.md documents
// and the round trip; a zeroed sector is a free lease of generation 0.
func TestLeaseRecordLayout(t *testing.T) {
	r := LeaseRecord{Held: true, Owner: "host-a", Generation: 7, Heartbeat: 3,
		Time: time.Unix(1, 2).UTC(), TTL: 10 * time.Second}
	p := r.Encode()
	if len(p) != 512 || string(p[:8]) != "BWLEASE1" || p[8] != 1 || p[12] != 1 || p[16] != 7 || p[24] != 3 ||
		p[48] != 6 || string(p[50:56]) != "host-a" || !bytes.Equal(p[56:508], make([]byte, 452)) {
		t.Fatalf("layout: % x", p[:64])
	}
	got, err := DecodeLeaseRecord(p)
	if err != nil || got != r {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, r)
	}
	if free, err := DecodeLeaseRecord(make([]byte, 512)); err != nil || free != (LeaseRecord{}) {
		t.Fatalf("zeroes: %+v %v", free, err)
	}
	for i, mut := range []func([]byte){
		func(b []byte) { b[0] = 'X' },          // magic
		func(b []byte) { b[100] ^= 1 },         // checksum
		func(b []byte) { b[8] = 2; fix(b) },    // version
		func(b []byte) { b[12] = 2; fix(b) },   // state
		func(b []byte) { b[48] = 255; fix(b) }, // owner length
	} {
		b := bytes.Clone(p)
		mut(b)
		if _, err := DecodeLeaseRecord(b); !errors.Is(err, ErrNotALease) {
			t.Errorf("mutation %d: %v, want ErrNotALease", i, err)
		}
	}
	if _, err := DecodeLeaseRecord(p[:511]); !errors.Is(err, ErrNotALease) {
		t.Errorf("short: %v", err)
	}
}

// fix recomputes the checksum after a mutation.
func fix(b []byte) {
	sum := crc(b[:508])
	b[508], b[509], b[510], b[511] = byte(sum), byte(sum>>8), byte(sum>>16), byte(sum>>24)
}

// FuzzDecodeLeaseRecord: any sector decodes or is ErrNotALease, and
// what decodes encodes back to the same bytes (no two encodings).
func FuzzDecodeLeaseRecord(f *testing.F) {
	f.Add(make([]byte, 512))
	f.Add(LeaseRecord{Held: true, Owner: "o", Generation: 1, TTL: time.Second}.Encode())
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := DecodeLeaseRecord(p)
		if err != nil {
			if !errors.Is(err, ErrNotALease) {
				t.Fatalf("error %v is not ErrNotALease", err)
			}
			return
		}
		if bytes.Equal(p, make([]byte, 512)) {
			return
		}
		if q := r.Encode(); !bytes.Equal(q[:50+len(r.Owner)], p[:50+len(r.Owner)]) {
			t.Fatalf("re-encoding differs")
		}
	})
}
