package repo

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
)

// xaesGCM is XAES-256-GCM (https://c2sp.org/XAES-256-GCM): AES-256-GCM
// under a key derived per message from a 24-byte nonce with the NIST SP
// 800-108r1 counter-mode KDF over AES-256-CMAC. Random 24-byte nonces are
// safe for 2⁸⁰ messages, where AES-256-GCM's own 12-byte nonces are not
// for a repository's billions of blobs; it runs at AES-NI speed (~5 GB/s
// here against ~2.4 for XChaCha20-Poly1305) and is built from
// FIPS-approved parts only. It implements cipher.AEAD.
type xaesGCM struct {
	block cipher.Block
	k1    [aes.BlockSize]byte // the CMAC subkey
}

func newXAESGCM(key []byte) (*xaesGCM, error) {
	if len(key) != 32 {
		return nil, errors.New("xaes-256-gcm: key must be 32 bytes")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	x := &xaesGCM{block: b}
	var l [aes.BlockSize]byte
	b.Encrypt(l[:], l[:])
	msb := l[0] >> 7
	for i := range aes.BlockSize - 1 {
		x.k1[i] = l[i]<<1 | l[i+1]>>7
	}
	x.k1[aes.BlockSize-1] = l[aes.BlockSize-1]<<1 ^ msb*0x87
	return x, nil
}

// derive returns the AES-256-GCM instance for nonce's first 12 bytes.
func (x *xaesGCM) derive(nonce []byte) cipher.AEAD {
	var m1, m2, key [32]byte
	for i, m := range [][]byte{m1[:16], m2[:16]} {
		m[1], m[2] = byte(i+1), 'X'
		copy(m[4:], nonce[:12])
		for j := range m {
			m[j] ^= x.k1[j]
		}
		x.block.Encrypt(key[16*i:16*(i+1)], m)
	}
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key never fails
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// NonceSize implements cipher.AEAD: 24-byte nonces (XAES-256-GCM).
func (x *xaesGCM) NonceSize() int { return 24 }

// Overhead implements cipher.AEAD: the 16-byte GCM tag.
func (x *xaesGCM) Overhead() int { return 16 }

// Seal implements cipher.AEAD: derives the per-nonce key, then AES-GCM seals.
func (x *xaesGCM) Seal(dst, nonce, plaintext, ad []byte) []byte {
	if len(nonce) != 24 {
		panic("xaes-256-gcm: bad nonce length")
	}
	return x.derive(nonce).Seal(dst, nonce[12:], plaintext, ad)
}

// Open implements cipher.AEAD: derives the per-nonce key, then AES-GCM opens.
func (x *xaesGCM) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != 24 {
		return nil, errors.New("xaes-256-gcm: bad nonce length")
	}
	return x.derive(nonce).Open(dst, nonce[12:], ciphertext, ad)
}
