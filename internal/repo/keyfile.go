package repo

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
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
func DefaultKDF() KDFParams { return KDFParams{Time: 3, Memory: 64 * 1024, Threads: 4} }

// none reports the parameters of a slot opened by a key file's random
// secret, which needs no key stretching.
func (p KDFParams) none() bool { return p == KDFParams{} }

// validate bounds parameters read from disk, so a hostile key file cannot
// make Open allocate gigabytes or spin for hours.
func (p KDFParams) validate() error {
	if p.none() {
		return nil
	}
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
// KEK = Argon2id(password, salt, time, memory, threads, 32), or, when
// time, memory and threads are all 0, BLAKE3-derive-key(keyFileContext,
// secret | salt) for a slot opened by a key file's 256-bit random secret.
// The header before the nonce is the associated data.
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

// Secret unlocks key slots: a password (slots with Argon2id parameters)
// or the 256-bit random secret of a key file (slots without a KDF). Each
// kind only tries its own slots, so opening with a key file never pays
// for Argon2id.
type Secret struct {
	Password string
	KeyFile  []byte // 32 bytes from ParseKeyFile; used when not nil
	// InsecureNoPassword says that an empty Password is meant: without it
	// an empty password is refused (ErrEmptyPassword), so a password lost
	// on its way (an empty file, an unset variable) never creates or opens
	// a repository that anyone can read.
	InsecureNoPassword bool
}

// check refuses an empty password unless InsecureNoPassword says it is
// meant, and InsecureNoPassword beside a password or key file.
func (s Secret) check() error {
	switch {
	case s.InsecureNoPassword && (s.Password != "" || s.KeyFile != nil):
		return fmt.Errorf("repo: no password asked for, and a password or key file given: %w", ErrInvalid)
	case s.KeyFile == nil && s.Password == "" && !s.InsecureNoPassword:
		return ErrEmptyPassword
	}
	return nil
}

// keyFileContext separates key-file KEKs from every other BLAKE3 use.
const keyFileContext = "blockwise 2026-11 repository key file KEK"

// kek derives the key-encryption key of slot k, or reports that s is of
// the other kind.
func (s Secret) kek(k *keyFile) ([]byte, bool) {
	if k.KDF.none() != (s.KeyFile != nil) {
		return nil, false
	}
	if s.KeyFile != nil {
		out := make([]byte, 32)
		blake3.DeriveKey(keyFileContext, append(bytes.Clone(s.KeyFile), k.Salt[:]...), out)
		return out, true
	}
	return deriveKEK(s.Password, k.Salt[:], k.KDF), true
}

// wrapKey makes a slot for s: a key file's slot has no KDF; a password's
// uses p, or DefaultKDF() when p is zero.
func wrapKey(s Secret, mk *masterKey, p KDFParams) (*keyFile, error) {
	switch {
	case s.KeyFile != nil:
		p = KDFParams{}
	case p.none():
		p = DefaultKDF()
	}
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
	kek, _ := s.kek(k)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	k.Ciphertext = aead.Seal(nil, k.Nonce[:], mk.bytes(), k.header())
	return k, nil
}

// unwrap returns the master key, or ErrWrongPassword. AEAD cannot tell a
// damaged slot from a wrong password: findKey catches damage before, by
// the slot's content hash (decodeKeySlot).
func (k *keyFile) unwrap(s Secret) (*masterKey, error) {
	kek, ok := s.kek(k)
	if !ok {
		return nil, ErrWrongPassword
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, k.Nonce[:], k.Ciphertext, k.header())
	if err != nil {
		return nil, ErrWrongPassword
	}
	return masterKeyFrom(plain), nil
}

// NewKeyFile returns the text of a new key file: "blockwise-key-v2 ",
// then in hex a 256-bit random secret and a 32-bit check of it, so that
// a damaged file reads as damaged, never as another secret (which would
// be reported as a wrong key). Add it to a repository with AddKey before
// relying on it.
func NewKeyFile() []byte {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("repo: no randomness: %v", err))
	}
	return []byte(keyFilePrefix2 + hex.EncodeToString(append(b[:], keyFileCheck(b[:])...)) + "\n")
}

// Key file texts: v1 is the prefix and 64 hex digits (no check: a digit
// changed into another still parses, and then fails as a wrong key); v2,
// written since, adds 8 hex digits of keyFileCheck.
const (
	keyFilePrefix  = "blockwise-key-v1 "
	keyFilePrefix2 = "blockwise-key-v2 "
	keyCheckSize   = 4
)

// keyCheckContext separates the key file check from every other BLAKE3 use.
const keyCheckContext = "blockwise 2026-12 key file check"

func keyFileCheck(secret []byte) []byte {
	out := make([]byte, keyCheckSize)
	blake3.DeriveKey(keyCheckContext, secret, out)
	return out
}

// ParseKeyFile returns the secret of a key file's text. Text that is not
// a whole key file (empty, cut short, a byte changed) is ErrCorrupt: the
// file is damaged, which a wrong key is not.
func ParseKeyFile(text []byte) ([]byte, error) {
	t := strings.TrimSpace(string(text))
	damaged := func(why string) error {
		return fmt.Errorf("repo: key file damaged or not a blockwise key file: %s (want %q or %q and hex digits): %w", why, keyFilePrefix2, keyFilePrefix, ErrCorrupt)
	}
	if t == "" {
		return nil, damaged("empty")
	}
	want, check := 32, false
	s, ok := strings.CutPrefix(t, keyFilePrefix2)
	if ok {
		want, check = 32+keyCheckSize, true
	} else if s, ok = strings.CutPrefix(t, keyFilePrefix); !ok {
		return nil, damaged("no known prefix")
	}
	b, err := hex.DecodeString(s)
	switch {
	case err != nil:
		return nil, damaged("not hex digits")
	case len(b) != want:
		return nil, damaged(fmt.Sprintf("%d bytes, want %d", len(b), want))
	case check && !bytes.Equal(keyFileCheck(b[:32]), b[32:]):
		return nil, damaged("check digits do not match")
	}
	return b[:32], nil
}

// prefault makes the next allocation of about n bytes cheap to touch.
// argon2 reads blocks of its fresh memory before writing them, so on this
// kind of virtual machine each 4 KiB page costs a fault that maps the zero
// page and then a copy-on-write fault with a TLB shootdown across every
// thread: 64 MiB cost ~250 ms of a cold command's ~350 ms key derivation.
// Writing the pages once costs one plain fault each (~25 ms, shared out
// over the cores); once freed, they stay in the Go heap, where argon2's
// allocation reuses them.
func prefault(n int) {
	b := make([]byte, n)
	var wg sync.WaitGroup
	parts := runtime.GOMAXPROCS(0)
	step := (n/parts + 4095) &^ 4095
	for lo := 0; lo < n; lo += step {
		wg.Go(func() {
			for i := lo; i < min(lo+step, n); i += 4096 {
				b[i] = 1
			}
		})
	}
	wg.Wait()
	runtime.KeepAlive(b)
	runtime.GC()
}

// deriveKEK runs Argon2id, then frees its memory at once: left to the
// next collection, the 64 MiB would look live until the heap doubled, and
// every buffer the backup allocates would come on top of it (measured: an
// incremental's peak RSS 155 -> 85 MiB).
func deriveKEK(password string, salt []byte, p KDFParams) []byte {
	prefault(int(p.Memory) << 10)
	kek := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, 32)
	runtime.GC()
	return kek
}
