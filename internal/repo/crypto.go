package repo

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"slices"

	"github.com/blockwise/blockwise/internal/backend"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// masterKey is what key files wrap: one key for XChaCha20-Poly1305 and an
// independent one for the keyed chunk hash. Separate keys so the ID
// function can never be turned into an oracle for the cipher.
type masterKey struct {
	Enc [32]byte
	MAC [32]byte
}

const masterKeySize = 64

func newMasterKey() (*masterKey, error) {
	var k masterKey
	if _, err := rand.Read(k.Enc[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.MAC[:]); err != nil {
		return nil, err
	}
	return &k, nil
}

func (k *masterKey) bytes() []byte { return append(k.Enc[:], k.MAC[:]...) }

func masterKeyFrom(b []byte) *masterKey {
	var k masterKey
	copy(k.Enc[:], b[:32])
	copy(k.MAC[:], b[32:64])
	return &k
}

// crypter seals and opens repository objects. With encryption it uses
// XAES-256-GCM or XChaCha20-Poly1305 (Config.Cipher); both take 24-byte
// random nonces, which make nonce reuse negligible without a counter
// shared between writers, and add the same 40 bytes. Without it, a
// BLAKE3 checksum still detects corruption.
type crypter struct {
	aead   cipher.AEAD // nil when unencrypted
	hasher *blake3.Hasher
}

const (
	nonceSize = chacha20poly1305.NonceSizeX
	tagSize   = chacha20poly1305.Overhead
	sumSize   = 32
)

// newCrypter seals with the named cipher (Config.CipherName).
func newCrypter(k *masterKey, name string) (*crypter, error) {
	if k == nil {
		return &crypter{hasher: blake3.New()}, nil
	}
	var aead cipher.AEAD
	var err error
	switch name {
	case CipherXChaCha:
		aead, err = chacha20poly1305.NewX(k.Enc[:])
	case CipherXAES:
		aead, err = newXAESGCM(k.Enc[:])
	default:
		err = fmt.Errorf("cipher %q unknown: %w", name, ErrCorrupt)
	}
	if err != nil {
		return nil, err
	}
	h, err := blake3.NewKeyed(k.MAC[:])
	if err != nil {
		return nil, err
	}
	return &crypter{aead: aead, hasher: h}, nil
}

// configCrypter seals the config object, always with XChaCha20-Poly1305:
// it must open before the repository's cipher is known.
func configCrypter(k *masterKey) (*crypter, error) { return newCrypter(k, CipherXChaCha) }

func (c *crypter) encrypted() bool { return c.aead != nil }

// overhead is the number of bytes seal adds.
func (c *crypter) overhead() int {
	if c.aead == nil {
		return sumSize
	}
	return nonceSize + tagSize
}

// blobID is the content address of plaintext: keyed when encrypted, so
// the store reveals no hash an outsider could match against known data.
func (c *crypter) blobID(data []byte) ID {
	h := c.hasher.Clone()
	h.Write(data)
	var id ID
	h.Sum(id[:0])
	return id
}

// seal authenticates (and encrypts) plain, binding ad.
func (c *crypter) seal(plain, ad []byte) []byte {
	return c.sealTo(make([]byte, 0, len(plain)+c.overhead()), plain, ad)
}

// sealTo appends the sealed form of plain to dst; plain must not overlap
// dst's spare capacity.
func (c *crypter) sealTo(dst, plain, ad []byte) []byte {
	if c.aead == nil {
		sum := checksum(ad, plain)
		return append(append(dst, plain...), sum[:]...)
	}
	dst = slices.Grow(dst, nonceSize+len(plain)+tagSize)
	n := len(dst)
	dst = dst[:n+nonceSize]
	if _, err := rand.Read(dst[n:]); err != nil {
		panic(fmt.Sprintf("repo: no randomness: %v", err)) // crypto/rand never fails on Linux
	}
	return c.aead.Seal(dst, dst[n:], plain, ad)
}

// open reverses seal. Any failure is ErrCorrupt: with AEAD a wrong key and
// damaged bytes are indistinguishable, and the key was already proven by
// the key file.
func (c *crypter) open(sealed, ad []byte) ([]byte, error) {
	if c.aead == nil {
		if len(sealed) < sumSize {
			return nil, fmt.Errorf("short object: %w", ErrCorrupt)
		}
		plain := sealed[:len(sealed)-sumSize]
		if sum := checksum(ad, plain); string(sum[:]) != string(sealed[len(plain):]) {
			return nil, fmt.Errorf("checksum mismatch: %w", ErrCorrupt)
		}
		return plain, nil
	}
	return c.openTo(nil, sealed, ad)
}

// openTo appends the opened form of sealed to dst; with encryption only
// (open handles the unencrypted checksum).
func (c *crypter) openTo(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < nonceSize+tagSize {
		return nil, fmt.Errorf("short object: %w", ErrCorrupt)
	}
	plain, err := c.aead.Open(dst, sealed[:nonceSize], sealed[nonceSize:], ad)
	if err != nil {
		return nil, fmt.Errorf("authentication failed: %w", ErrCorrupt)
	}
	return plain, nil
}

// openInPlace is open decrypting over sealed's own memory (the caller
// gives sealed up): loading a large index file then holds one copy of it,
// not two. sealed is clobbered even when authentication fails.
func (c *crypter) openInPlace(sealed, ad []byte) ([]byte, error) {
	if c.aead == nil || len(sealed) < nonceSize+tagSize {
		return c.open(sealed, ad)
	}
	return c.openTo(sealed[nonceSize:nonceSize], sealed, ad)
}

func checksum(ad, plain []byte) [32]byte {
	h := blake3.New()
	h.Write(ad)
	h.Write(plain)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// fileID names a stored file by the hash of its bytes, so Check can verify
// every file without keys and a name can never point at other content.
func fileID(data []byte) ID { return blake3.Sum256(data) }

// ContentNamed reports whether data is the content a metadata file named
// h holds: index files and restore points are named by fileID. A cache of
// them (backend.NewCache) checks each copy with it before use.
func ContentNamed(h backend.Handle, data []byte) bool {
	return fileID(data).String() == h.Name
}
