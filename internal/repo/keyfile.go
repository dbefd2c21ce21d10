package repo

import (
	"crypto/rand"
	"fmt"
	"runtime"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KDFParams are the Argon2id cost parameters stored in a key file.
type KDFParams struct {
	Time    uint32 // iterations
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultKDF follows RFC 9106's second recommended option (64 MiB, t=3).
var DefaultKDF = KDFParams{Time: 3, Memory: 64 * 1024, Threads: 4}

// validate bounds parameters read from disk, so a hostile key file cannot
// make Open allocate gigabytes or spin for hours.
func (p KDFParams) validate() error {
	if p.Time < 1 || p.Time > 64 || p.Threads < 1 || p.Memory < 8*uint32(p.Threads) || p.Memory > 4<<20 {
		return fmt.Errorf("key file: kdf parameters %+v out of range: %w", p, ErrCorrupt)
	}
	return nil
}

// Key file layout (134 bytes):
//
//	"BWKY" | version u8 | time u32 | memory u32 | threads u8 | salt [16]
//	| nonce [24] | XChaCha20-Poly1305(KEK, master key [64]) incl. tag [16]
//
// KEK = Argon2id(password, salt, time, memory, threads, 32). The header
// before the nonce is the associated data.
const (
	keyMagic      = "BWKY"
	keyVersion    = 1
	keyHeaderSize = 4 + 1 + 4 + 4 + 1 + 16
	keyFileSize   = keyHeaderSize + nonceSize + masterKeySize + tagSize
)

type keyFile struct {
	KDF        KDFParams
	Salt       [16]byte
	Nonce      [24]byte
	Ciphertext []byte
}

func (k *keyFile) header() []byte {
	b := append([]byte(keyMagic), keyVersion)
	b = putU32(b, k.KDF.Time)
	b = putU32(b, k.KDF.Memory)
	b = append(b, k.KDF.Threads)
	return append(b, k.Salt[:]...)
}

func (k *keyFile) encode() []byte {
	b := append(k.header(), k.Nonce[:]...)
	return append(b, k.Ciphertext...)
}

func decodeKeyFile(data []byte) (*keyFile, error) {
	if len(data) != keyFileSize {
		return nil, fmt.Errorf("key file: size %d: %w", len(data), ErrCorrupt)
	}
	r := &reader{b: data}
	if string(r.take(4)) != keyMagic || r.u8() != keyVersion {
		return nil, fmt.Errorf("key file: bad magic or version: %w", ErrCorrupt)
	}
	k := &keyFile{KDF: KDFParams{Time: r.u32(), Memory: r.u32(), Threads: r.u8()}}
	copy(k.Salt[:], r.take(16))
	copy(k.Nonce[:], r.take(nonceSize))
	k.Ciphertext = r.take(masterKeySize + tagSize)
	if err := r.done(); err != nil {
		return nil, err
	}
	return k, k.KDF.validate()
}

func kek(password string, k *keyFile) []byte {
	p := k.KDF
	prefault(int(p.Memory) << 10)
	return argon2.IDKey([]byte(password), k.Salt[:], p.Time, p.Memory, p.Threads, 32)
}

func wrapKey(password string, mk *masterKey, p KDFParams) (*keyFile, error) {
	k := &keyFile{KDF: p}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%w (%w)", ErrInvalid, err)
	}
	if _, err := rand.Read(k.Salt[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.Nonce[:]); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek(password, k))
	if err != nil {
		return nil, err
	}
	k.Ciphertext = aead.Seal(nil, k.Nonce[:], mk.bytes(), k.header())
	return k, nil
}

// unwrap returns the master key, or ErrWrongPassword. A damaged key file
// also reports a wrong password: AEAD cannot tell the two apart.
func (k *keyFile) unwrap(password string) (*masterKey, error) {
	aead, err := chacha20poly1305.NewX(kek(password, k))
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, k.Nonce[:], k.Ciphertext, k.header())
	if err != nil {
		return nil, ErrWrongPassword
	}
	return masterKeyFrom(plain), nil
}

// prefault makes the next allocation of about n bytes cheap to touch.
// argon2 reads blocks of its fresh memory before writing them, so on this
// kind of virtual machine each 4 KiB page costs a fault that maps the zero
// page and then a copy-on-write fault with a TLB shootdown across every
// thread: 64 MiB cost ~250 ms of a cold command's ~350 ms key derivation.
// Writing the pages once costs one plain fault each (~40 ms); once freed,
// they stay in the Go heap, where argon2's allocation reuses them.
func prefault(n int) {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	runtime.GC()
}
