package repo

import (
	"encoding/json"
	"fmt"
	"time"
)

// Ciphers for blobs, packs' headers, index files and manifests (the config
// object and key slots always use XChaCha20-Poly1305).
const (
	CipherXAES    = "xaes-256-gcm"       // the default: AES-NI speed, FIPS-approved parts
	CipherXChaCha = "xchacha20-poly1305" // repositories made before the choice ("")
)

// Config is the repository's fixed parameters, chosen at Init and stored
// (sealed) in the config object.
type Config struct {
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	ChunkSize   uint32    `json:"chunk_size"` // bytes per slot, power of two
	PackSize    uint32    `json:"pack_size"`  // target pack size
	PageSlots   uint32    `json:"page_slots"` // slots per index page, power of two
	Compression string    `json:"compression"`
	Encrypted   bool      `json:"encrypted"`
	Cipher      string    `json:"cipher,omitempty"` // "" means CipherXChaCha
}

// CipherName is the repository's cipher: Cipher, or CipherXChaCha for a
// repository made before the choice.
func (c *Config) CipherName() string {
	if c.Cipher == "" {
		return CipherXChaCha
	}
	return c.Cipher
}

const repoVersion = 1

func (c *Config) validate() error {
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	switch {
	case c.Version != repoVersion:
		return fmt.Errorf("config: version %d unsupported", c.Version)
	case !pow2(c.ChunkSize) || c.ChunkSize < 4<<10 || c.ChunkSize > 16<<20:
		return fmt.Errorf("config: chunk size %d not a power of two in [4KiB,16MiB]", c.ChunkSize)
	case c.PackSize < 1<<10 || c.PackSize > 1<<30:
		return fmt.Errorf("config: pack size %d out of range", c.PackSize)
	case !pow2(c.PageSlots) || c.PageSlots < 8 || c.PageSlots > 1<<16:
		return fmt.Errorf("config: page slots %d not a power of two in [8,65536]", c.PageSlots)
	case compressionNames[c.Compression] == "":
		return fmt.Errorf("config: compression %q unknown", c.Compression)
	case c.Cipher != "" && c.Cipher != CipherXAES && c.Cipher != CipherXChaCha:
		return fmt.Errorf("config: cipher %q unknown", c.Cipher)
	}
	return nil
}

// Config object layout:
//
//	"BWRC" | version u8 | flags u8 (bit 0: encrypted) | seal(JSON Config)
//
// The flags are clear so Open knows whether it needs a key before it can
// read the rest; they are bound as associated data, so flipping the bit
// makes the body fail authentication.
const configMagic = "BWRC"

func encodeConfig(c *crypter, cfg *Config) ([]byte, error) {
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	hdr := []byte{configMagic[0], configMagic[1], configMagic[2], configMagic[3], repoVersion, 0}
	if cfg.Encrypted {
		hdr[5] = 1
	}
	return append(hdr, c.seal(body, hdr)...), nil
}

// configEncrypted reads the clear header.
func configEncrypted(data []byte) (bool, error) {
	if len(data) < 6 || string(data[:4]) != configMagic || data[4] != repoVersion || data[5] > 1 {
		return false, fmt.Errorf("config: bad header: %w", ErrCorrupt)
	}
	return data[5] == 1, nil
}

func decodeConfig(c *crypter, data []byte) (*Config, error) {
	enc, err := configEncrypted(data)
	if err != nil {
		return nil, err
	}
	body, err := c.open(data[6:], data[:6])
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		return nil, fmt.Errorf("config: %v: %w", err, ErrCorrupt)
	}
	if err := cfg.validate(); err != nil || cfg.Encrypted != enc {
		return nil, fmt.Errorf("config: %v: %w", err, ErrCorrupt)
	}
	return &cfg, nil
}
