package repo

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/mem"
)

// Fuzz targets for every decoder of bytes that come from the backend.
// Each must reject garbage with an error, never panic or over-allocate,
// and re-encode whatever it accepts to the same bytes.

func FuzzPackHeader(f *testing.F) {
	f.Add(encodePackHeader([]packEntry{{Type: BlobChunk, Flags: flagZstd, Stored: 10, Raw: 20, ID: ID{1}}}), uint64(10))
	f.Add(encodePackHeader(nil), uint64(0))
	f.Add([]byte("BWPH\x01\xff\xff\xff\xff"), uint64(1<<40))
	f.Fuzz(func(t *testing.T, b []byte, dataLen uint64) {
		entries, err := decodePackHeader(b, dataLen)
		if err != nil {
			return
		}
		if !bytes.Equal(encodePackHeader(entries), b) {
			t.Fatal("accepted header does not round-trip")
		}
	})
}

func FuzzPackTrailer(f *testing.F) {
	f.Add(encodePackTrailer(100), int64(200))
	f.Add([]byte("\xff\xff\xff\xffBWPK"), int64(8))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		n, err := decodePackTrailer(b, size)
		if err == nil && (n < 0 || n > size-packTrailerSize) {
			t.Fatalf("header length %d outside pack of %d", n, size)
		}
	})
}

// unencryptedWithPackSeed is an unencrypted repository (the fuzzer can
// reach past checksums by hashing its input) and adds one real pack of it
// to f's corpus.
func unencryptedWithPackSeed(f *testing.F) *Repository {
	r, _ := newRepository(nil, Options{Unencrypted: true}.config(), nil, Options{})
	p := &packer{r: r}
	var seed []byte
	p.r.be = captureBackend(&seed)
	p.add(f.Context(), BlobChunk, r.crypt.blobID([]byte("hello")), []byte("hello"))
	p.flush(f.Context())
	f.Add(seed)
	return r
}

// FuzzPack feeds whole pack files through the real parser (unencrypted,
// so the fuzzer can reach past the checksum by hashing its input).
func FuzzPack(f *testing.F) {
	r := unencryptedWithPackSeed(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := r.parsePack(fileID(b), b)
		if err != nil {
			return
		}
		for _, e := range entries {
			r.decodeBlob(e, ID{}, b[e.Offset:e.Offset+e.Stored])
		}
	})
}

func FuzzIndex(f *testing.F) {
	f.Add(encodeIndex([]packInfo{{ID: ID{9}, Entries: []packEntry{{Type: BlobPage, Offset: 5, Stored: 7, Raw: 9, ID: ID{3}}}}}))
	f.Add(encodeIndex(nil))
	f.Add(binary.LittleEndian.AppendUint32(nil, 0xffffffff))
	f.Fuzz(func(t *testing.T, b []byte) {
		packs, err := decodeIndex(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeIndex(packs), b) {
			t.Fatal("accepted index does not round-trip")
		}
	})
}

func FuzzPage(f *testing.F) {
	f.Add(encodePage([]ID{{1}, {}, {2}}), 3)
	f.Add(encodePage(make([]ID, 9)), 9)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		if want < 0 || want > 1<<16 {
			return // callers pass at most PageSlots
		}
		slots, err := decodePage(b, want)
		if err != nil {
			return
		}
		if !bytes.Equal(encodePage(slots), b) {
			t.Fatal("accepted page does not round-trip")
		}
	})
}

func FuzzManifest(f *testing.F) {
	cfg := Options{}.config()
	c, _ := newCrypter(nil, "") // unencrypted: the fuzzer can forge checksums
	m := &Manifest{Meta: Meta{Disk: "d", Size: 1 << 20, Time: time.Unix(1, 0)}, ChunkSize: cfg.ChunkSize, PageSlots: cfg.PageSlots, Pages: []ID{{7}}}
	seed, _ := encodeManifest(c, m)
	f.Add(seed[5 : len(seed)-sumSize])
	f.Add([]byte(`{"size":1152921504606846976,"chunk_size":65536,"page_slots":4096}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		data := sealEnvelope(c, manifestMagic, body)
		m, err := decodeManifest(c, cfg, data)
		if err != nil {
			return
		}
		if uint64(len(m.Pages)) != ceilDiv(m.Slots(), uint64(m.PageSlots)) {
			t.Fatal("accepted manifest with inconsistent page count")
		}
	})
}

func FuzzKeyFile(f *testing.F) {
	mk, _ := newMasterKey()
	kf, _ := wrapKey(Secret{Password: "pw"}, mk, testKDF)
	f.Add(kf.encode())
	secret, _ := ParseKeyFile(NewKeyFile())
	kf, _ = wrapKey(Secret{KeyFile: secret}, mk, KDFParams{})
	f.Add(kf.encode())
	f.Add(make([]byte, keyFileSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKeyFile(b)
		if err != nil {
			return
		}
		if !bytes.Equal(k.encode(), b) {
			t.Fatal("accepted key file does not round-trip")
		}
		if k.KDF.validate() != nil {
			t.Fatal("accepted out-of-range KDF parameters")
		}
	})
}

// FuzzParseKeyFile: the text of a --key-file never panics the parser,
// and what it accepts is a 32-byte secret whose v2 text parses back.
func FuzzParseKeyFile(f *testing.F) {
	text := NewKeyFile()
	f.Add(text)
	f.Add(text[:len(text)/2])
	f.Add([]byte(keyFilePrefix + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte(keyFilePrefix2 + strings.Repeat("0", 72)))
	f.Add([]byte(""))
	f.Add([]byte("  \n"))
	f.Add([]byte("blockwise-key-v3 00"))
	f.Add([]byte(keyFilePrefix + "00"))
	f.Add([]byte("blockwise-key-v1 zz"))
	f.Fuzz(func(t *testing.T, b []byte) {
		secret, err := ParseKeyFile(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if len(secret) != 32 {
			t.Fatalf("accepted a %d-byte secret", len(secret))
		}
		v2 := keyFilePrefix2 + hex.EncodeToString(append(bytes.Clone(secret), keyFileCheck(secret)...))
		if again, err := ParseKeyFile([]byte(v2)); err != nil || !bytes.Equal(again, secret) {
			t.Fatalf("secret does not round-trip through v2: %v", err)
		}
	})
}

func FuzzConfig(f *testing.F) {
	c, _ := newCrypter(nil, "")
	cfg := Options{Unencrypted: true}.config()
	seed, _ := encodeConfig(c, cfg)
	f.Add(seed[6 : len(seed)-sumSize])
	f.Fuzz(func(t *testing.T, body []byte) {
		hdr := []byte("BWRC\x01\x00")
		data := append(hdr, c.seal(body, hdr)...)
		if cfg, err := decodeConfig(c, data); err == nil && cfg.validate() != nil {
			t.Fatal("accepted invalid config")
		}
	})
}

// FuzzHead: a cached head (a file in the user's cache directory, so
// anything) either parses as manifest id's head, which encodes back to a
// head that parses the same, or is refused; never a panic.
func FuzzHead(f *testing.F) {
	id := ID{1, 2, 3}
	good, _ := json.Marshal(Head{ID: id, Meta: Meta{Disk: "vm", DiskUUID: "u", ChangeID: "c/1", Size: 1 << 30, Time: time.Unix(1e9, 0).UTC(), Changed: 5}})
	f.Add(good)
	f.Add([]byte(`{"id":"` + id.String() + `","size":-1}`))
	f.Add([]byte(`{"id":"zz"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := decodeHead(b, id)
		if !ok {
			return
		}
		if h.ID != id {
			t.Fatalf("accepted the head of %v as %v's", h.ID, id)
		}
		again, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		h2, ok := decodeHead(again, id)
		if !ok || h2.ID != h.ID || h2.Disk != h.Disk || h2.ChangeID != h.ChangeID || h2.Size != h.Size || !h2.Time.Equal(h.Time) {
			t.Fatalf("round trip: %+v -> %+v (%v)", h, h2, ok)
		}
	})
}

// FuzzReadPackHeader feeds pack files to repair index's reader, which
// finds the header through ranged loads from the end: it must return
// entries that tile the pack, or an error, and never panic. The pack is
// named by the hash of its tail when the trailer allows, so the fuzzer
// reaches the header decoder (unencrypted: no authentication to pass).
func FuzzReadPackHeader(f *testing.F) {
	r := unencryptedWithPackSeed(f)
	f.Add([]byte("BWPK"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name := fileID(b)
		if len(b) >= packTrailerSize {
			if hl, err := decodePackTrailer(b[len(b)-packTrailerSize:], int64(len(b))); err == nil {
				name = packID(b[int64(len(b))-packTrailerSize-hl:])
			}
		}
		be := mem.New()
		h := backend.Handle{Type: backend.Data, Name: name.String()}
		if err := be.Save(t.Context(), h, b); err != nil {
			t.Fatal(err)
		}
		r.be = be
		entries, err := r.readPackHeader(t.Context(), name, int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if end := packDataEnd(entries); end > int64(len(b)) {
			t.Fatalf("entries reach %d in a %d-byte pack", end, len(b))
		}
	})
}

// FuzzLock: a lock file (anyone who can write the repository can leave
// one) is read by every command that takes a lock: it decodes into a
// lock or fails with ErrCorrupt, and its holder check never panics. The
// body is sealed in an unencrypted envelope named by its hash, so the
// fuzzer reaches the JSON decoder; raw, it tests the envelope.
func FuzzLock(f *testing.F) {
	good, _ := json.Marshal(lockInfo{Exclusive: true, Host: "h", PID: 1, Time: time.Unix(1e9, 0)})
	f.Add(good, true)
	f.Add([]byte(`{"pid":-1,"time":"x"}`), true)
	f.Add([]byte("BWLK\x01"), false)
	r, _ := newRepository(mem.New(), Options{Unencrypted: true}.config(), nil, Options{})
	f.Fuzz(func(t *testing.T, body []byte, sealed bool) {
		data := body
		if sealed {
			data = sealEnvelope(r.crypt, lockMagic, body)
		}
		id, err := r.saveFile(t.Context(), backend.Locks, data)
		if err != nil {
			return // saved before by this worker: same bytes, same name
		}
		defer r.be.Remove(t.Context(), backend.Handle{Type: backend.Locks, Name: id.String()})
		li, err := r.readLock(t.Context(), id.String())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		li.deadHolder()
	})
}
