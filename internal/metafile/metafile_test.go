package metafile

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTripAndDamage(t *testing.T) {
	good := Encode("BWTEST01", 1, []byte("hello"))
	tests := []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"good", good, false},
		{"empty", nil, true},
		{"truncated header", good[:10], true},
		{"truncated body", good[:len(good)-1], true},
		{"bad magic", append([]byte("XXTEST01"), good[8:]...), true},
		{"flipped body", func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), true},
		{"future version", Encode("BWTEST01", 9, []byte("x")), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, body, err := Decode("f", "BWTEST01", 1, tc.data)
			if tc.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("want ErrCorrupt, got %v", err)
				}
				return
			}
			if err != nil || string(body) != "hello" {
				t.Fatalf("got %q, %v", body, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode("BWTEST01", 1, []byte("hello")))
	f.Add([]byte("BWTEST01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, body, err := Decode("f", "BWTEST01", 1, data)
		if err == nil && !bytes.Equal(Encode("BWTEST01", 1, body)[HeaderSize:], body) {
			t.Fatal("round trip")
		}
	})
}
