package repo

import (
	"encoding/hex"
	"fmt"
)

// ID names a blob, pack, index file or manifest: 32 bytes, shown as hex.
// Blob IDs are keyed hashes of the plaintext when the repository is
// encrypted; file IDs are plain BLAKE3 hashes of the stored bytes.
type ID [32]byte

// zeroID marks a zero slot in a page. No real hash is all zero bytes.
var zeroID ID

// String returns the hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, for messages.
func (id ID) Short() string { return id.String()[:8] }

// IsZero reports whether id is the zero-slot marker.
func (id ID) IsZero() bool { return id == zeroID }

// ParseID parses the hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("repo: id %q: want 64 hex digits: %w", s, ErrInvalid)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("repo: id %q: %v: %w", s, err, ErrInvalid)
	}
	return id, nil
}

// MarshalText implements encoding.TextMarshaler (hex in JSON).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}
