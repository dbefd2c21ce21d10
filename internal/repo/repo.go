package repo

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// Options configure a Repository; the zero value gives the defaults.
//
// The first group is the repository's format, fixed at Init and stored
// in its config: Open ignores it. The second group are settings of one
// Repository value (this process's handle), for Init and Open alike, so
// two repositories open in one process can differ; nothing in the
// package is configured any other way.
type Options struct {
	ChunkSize uint32 // default 64 KiB (see docs/repository.md)
	PackSize  uint32 // target pack size, default 16 MiB
	PageSlots uint32 // slots per index page, default 4096
	// Compression is the repository's default setting at Init
	// (CompressionAuto if empty), and at Open this process's setting for
	// what it writes ("": the repository's default); see codec.go.
	Compression string
	Unencrypted bool   // for tests only: no password, checksums instead of AEAD
	Cipher      string // CipherXAES (default) or CipherXChaCha
	// InsecureNoPassword allows an encrypted repository with an empty
	// password (see Secret.InsecureNoPassword); Init refuses one without.
	InsecureNoPassword bool

	// KDF is the Argon2id cost of the password slots Init and AddKey (with
	// zero KDFParams) make; zero: DefaultKDF().
	KDF KDFParams
	// CacheDir is where this Repository keeps what it learnt about
	// repositories ("": nowhere): today the heads of restore points (see
	// Heads). The CLI points it at the user's cache directory.
	CacheDir string
	// IndexMemoryBlobs is the most blobs the index keeps in its in-memory
	// table before spilling them to a run file (spill.go); 0:
	// DefaultIndexMemoryBlobs, negative: no limit.
	IndexMemoryBlobs int
	// IndexSpillDir is where the index's run files go ("": os.TempDir();
	// the CLI uses the user's cache directory, /tmp is often in memory).
	IndexSpillDir string
	// RepackUnused is the fraction of a pack's bytes that must be unused
	// before Prune rewrites its live blobs into new packs; 0:
	// DefaultRepackUnused.
	RepackUnused float64
	// LockTTL is how long a lock stays valid without a refresh (see Lock);
	// 0: DefaultLockTTL. Negative makes every lock stale at once (tests
	// of crashed holders).
	LockTTL time.Duration
}

// Defaults.
const (
	DefaultChunkSize        = 64 << 10
	DefaultPackSize         = 16 << 20
	DefaultPageSlots        = 4096
	DefaultIndexMemoryBlobs = 1 << 20 // ~60 MiB of table
	DefaultRepackUnused     = 0.3
	DefaultLockTTL          = 30 * time.Minute
)

// settings returns o with the zero-valued settings (not the format)
// replaced by their defaults; IndexMemoryBlobs becomes 0 for no limit.
func (o Options) settings() Options {
	if o.KDF.none() {
		o.KDF = DefaultKDF()
	}
	switch {
	case o.IndexMemoryBlobs == 0:
		o.IndexMemoryBlobs = DefaultIndexMemoryBlobs
	case o.IndexMemoryBlobs < 0:
		o.IndexMemoryBlobs = 0
	}
	if o.RepackUnused == 0 {
		o.RepackUnused = DefaultRepackUnused
	}
	if o.LockTTL == 0 {
		o.LockTTL = DefaultLockTTL
	}
	return o
}

// workers bounds concurrent backend operations of one call.
const workers = 4

// Repository is an open repository. It is safe for concurrent use.
type Repository struct {
	be       backend.Backend
	cfg      *Config
	crypt    *crypter
	codec    *codec // how this process compresses what it writes
	zdec     *zstd.Decoder
	idx      *index
	mk       *masterKey // nil when unencrypted; kept for AddKey
	zeroOnce sync.Once
	zeroBuf  []byte
	lockWait time.Duration // how long Lock waits out a conflicting lock
	noLock   bool          // SetNoLock: readers take no lock, writers are refused
	opened   OpenTimes
	opts     Options // settings(): no zero values left
	// noIndex: idx does not hold the index files (OpenNoIndex, and no
	// load since), so Prune and RepairIndex need not read them back into
	// it after rewriting them.
	noIndex atomic.Bool
	bufs    packBufPool // idle pack buffers, shared by this repository's writers
}

// OpenTimes is where opening a repository spent its time: Unlock is
// loading the key files and deriving the key that opens one (Argon2id,
// for a password), Index is reading the index files.
type OpenTimes struct {
	Unlock, Index time.Duration
}

// OpenTimes reports how long OpenWith took to unlock the repository and
// to load its index.
func (r *Repository) OpenTimes() OpenTimes { return r.opened }

var configHandle = backend.Handle{Type: backend.Config, Name: "config"}

// Init creates a repository in an empty backend.
func Init(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	cfg := opts.config()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("repo: init: %v: %w", err, ErrInvalid)
	}
	if _, err := be.Stat(ctx, configHandle); err == nil {
		return nil, fmt.Errorf("repo: init: %w", ErrExists)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, fmt.Errorf("repo: init: %w", err)
	}
	secret := Secret{Password: password, InsecureNoPassword: opts.InsecureNoPassword}
	var mk *masterKey
	if cfg.Encrypted {
		if err := secret.check(); err != nil {
			return nil, fmt.Errorf("repo: init: %w", err)
		}
		var err error
		if mk, err = newMasterKey(); err != nil {
			return nil, err
		}
		if err := addKey(ctx, be, secret, mk, opts.settings().KDF); err != nil {
			return nil, err
		}
	}
	r, err := newRepository(be, cfg, mk, opts)
	if err != nil {
		return nil, err
	}
	cc, err := configCrypter(mk)
	if err != nil {
		return nil, err
	}
	data, err := encodeConfig(cc, cfg)
	if err != nil {
		return nil, err
	}
	// Config last: a crash before it leaves no repository, only a key.
	if err := be.Save(ctx, configHandle, data); err != nil {
		return nil, fmt.Errorf("repo: init: save config: %w", translate(err))
	}
	return r, nil
}

func (o Options) config() *Config {
	cfg := &Config{Version: repoVersion, ChunkSize: o.ChunkSize, PackSize: o.PackSize, PageSlots: o.PageSlots,
		Compression: o.Compression, Encrypted: !o.Unencrypted, Created: time.Now().UTC()}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.PackSize == 0 {
		cfg.PackSize = DefaultPackSize
	}
	if cfg.PageSlots == 0 {
		cfg.PageSlots = DefaultPageSlots
	}
	if cfg.Compression == "" {
		cfg.Compression = CompressionAuto
	}
	cfg.Cipher = o.Cipher
	if cfg.Cipher == "" && cfg.Encrypted {
		cfg.Cipher = CipherXAES
	}
	cfg.ID = randomName()
	return cfg
}

func randomName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func addKey(ctx context.Context, be backend.Backend, s Secret, mk *masterKey, p KDFParams) error {
	kf, err := wrapKey(s, mk, p)
	if err != nil {
		return err
	}
	data := kf.encode()
	h := backend.Handle{Type: backend.Keys, Name: fileID(data).String()}
	if err := be.Save(ctx, h, data); err != nil {
		return fmt.Errorf("repo: save key: %w", err)
	}
	return nil
}

func newRepository(be backend.Backend, cfg *Config, mk *masterKey, opts Options) (*Repository, error) {
	c, err := newCrypter(mk, cfg.CipherName())
	if err != nil {
		return nil, err
	}
	r := &Repository{be: be, cfg: cfg, crypt: c, mk: mk, opts: opts.settings()}
	r.idx = r.newIndex()
	// The writer's setting: this process's choice, else the repository's.
	mode := cmp.Or(opts.Compression, cfg.Compression)
	if r.codec, err = newCodec(mode, r.maxBlob()); err != nil {
		return nil, err
	}
	// Decoding is always possible so a reader never depends on settings.
	r.zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(r.maxBlob())+1))
	return r, err
}

// translate maps backend sentinels onto the repo's own.
func translate(err error) error {
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, backend.ErrExists):
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return err
}

// Open opens an existing repository with a password and loads its index;
// opts' settings apply (its format fields are ignored).
func Open(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	return OpenWith(ctx, be, Secret{Password: password}, opts)
}

// OpenWith opens an existing repository with a password or a key file's
// secret and loads its index.
func OpenWith(ctx context.Context, be backend.Backend, s Secret, opts Options) (*Repository, error) {
	r, err := OpenNoIndex(ctx, be, s, opts)
	if err != nil {
		return nil, err
	}
	indexStart := time.Now()
	if err := r.loadIndex(ctx); err != nil {
		return nil, err
	}
	r.opened.Index = time.Since(indexStart)
	return r, nil
}

// OpenNoIndex opens a repository without reading its index files, for
// what reads them itself: RepairIndex and Check, which must work when
// one of them is damaged (Open refuses then), and Stats and Prune, which
// need no index of every chunk. Every other method would find no blob.
func OpenNoIndex(ctx context.Context, be backend.Backend, s Secret, opts Options) (*Repository, error) {
	data, err := backend.LoadAll(ctx, be, configHandle, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("repo: open: %w", translate(err))
	}
	enc, err := configEncrypted(data)
	if err != nil {
		return nil, fmt.Errorf("repo: open: %w", err)
	}
	var mk *masterKey
	start := time.Now()
	if enc {
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("repo: open: %w", err)
		}
		if mk, err = findKey(ctx, be, s); err != nil {
			return nil, err
		}
	}
	unlocked := time.Now()
	c, err := configCrypter(mk)
	if err != nil {
		return nil, err
	}
	cfg, err := decodeConfig(c, data)
	if err != nil {
		return nil, fmt.Errorf("repo: open: %w", err)
	}
	r, err := newRepository(be, cfg, mk, opts)
	if err != nil {
		return nil, err
	}
	r.opened = OpenTimes{Unlock: unlocked.Sub(start)}
	r.noIndex.Store(true)
	return r, nil
}

// findKey tries the password on every key file. A slot whose bytes no
// longer hash to its name, or do not decode, is damaged: it is skipped (a
// damaged slot must not hide a good one), but if no other slot opens,
// the damage is the error (ErrCorrupt, naming the slots), not a wrong
// password, which could only be claimed of slots that were intact.
func findKey(ctx context.Context, be backend.Backend, s Secret) (*masterKey, error) {
	var names []string
	err := be.List(ctx, backend.Keys, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: list keys: %w", err)
	}
	var damaged []string
	for _, n := range names {
		data, err := backend.LoadAll(ctx, be, backend.Handle{Type: backend.Keys, Name: n}, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("repo: load key %s: %w", n, err)
		}
		kf, err := decodeKeySlot(n, data)
		if err != nil {
			damaged = append(damaged, n)
			continue
		}
		if mk, err := kf.unwrap(s); err == nil {
			return mk, nil
		}
	}
	if len(damaged) > 0 {
		return nil, fmt.Errorf("repo: open: key slot(s) %s/%s damaged (content does not match the name, or does not decode), and none of the other %d slot(s) opens with this password or key file: %w",
			backend.Keys, strings.Join(damaged, ", "+string(backend.Keys)+"/"), len(names)-len(damaged), ErrCorrupt)
	}
	return nil, fmt.Errorf("repo: open: %d key(s) tried: %w", len(names), ErrWrongPassword)
}

// decodeKeySlot decodes the key slot stored as name, which must be the
// hash of its bytes (addKey names it so): AEAD alone could not tell a
// damaged slot from a wrong password.
func decodeKeySlot(name string, data []byte) (*keyFile, error) {
	if fileID(data).String() != name {
		return nil, fmt.Errorf("key slot %s: content hash does not match name: %w", name, ErrCorrupt)
	}
	return decodeKeyFile(data)
}

// loadIndex builds the in-memory index from every index file.
func (r *Repository) loadIndex(ctx context.Context) error {
	x, err := r.readIndex(ctx)
	if err != nil {
		return err
	}
	r.idx.replace(x)
	r.noIndex.Store(false)
	return nil
}

// reloadIndex rebuilds the index from the index files, dropping the old
// one first so that the two are never in memory together (a twin index
// was most of Prune's memory). Only under the exclusive lock, when
// nothing else may read the index meanwhile; if it fails the repository
// has an empty index and must be opened again.
func (r *Repository) reloadIndex(ctx context.Context) error {
	r.idx.replace(r.newIndex())
	return r.loadIndex(ctx)
}

// refreshIndex brings the index up to date with the backend: new index
// files are added; if one we know vanished (a prune elsewhere rewrote the
// index) it is rebuilt from scratch.
func (r *Repository) refreshIndex(ctx context.Context) error {
	names, err := r.listNames(ctx, backend.Index)
	if err != nil {
		return err
	}
	known := r.idx.fileNames()
	if len(known) > 0 && !containsAll(names, known) {
		return r.loadIndex(ctx)
	}
	var fresh []backend.FileInfo // sizes unknown: read whole
	for _, n := range names {
		if !slices.Contains(known, n) {
			fresh = append(fresh, backend.FileInfo{Name: n})
		}
	}
	err = r.readIndexFiles(ctx, r.idx, fresh)
	if errors.Is(err, backend.ErrNotFound) { // replaced meanwhile: start over
		return r.loadIndex(ctx)
	}
	if err == nil && len(known) == 0 {
		r.noIndex.Store(false) // every file listed is in now
	}
	return err
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// readIndex reads every index file into a new index. An index file that
// vanishes between the listing and its load was replaced by a prune in
// another process (opening takes no lock): the read starts over.
func (r *Repository) readIndex(ctx context.Context) (*index, error) {
	for attempt := 1; ; attempt++ {
		x, err := r.readIndexOnce(ctx)
		if err == nil || !errors.Is(err, backend.ErrNotFound) || attempt == 5 {
			return x, err
		}
	}
}

// readIndexOnce reads the index files listed now into a new index, sized
// once from their sizes: growing the table rehashes it and faults in
// fresh memory several times over.
func (r *Repository) readIndexOnce(ctx context.Context) (*index, error) {
	files, size, err := r.indexFiles(ctx)
	if err != nil {
		return nil, err
	}
	x := r.newIndex()
	x.mu.Lock()
	x.reserve(int(size / indexEntrySize))
	x.mu.Unlock()
	if err := r.readIndexFiles(ctx, x, files); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

// indexFiles lists the index files and their total size.
func (r *Repository) indexFiles(ctx context.Context) ([]backend.FileInfo, int64, error) {
	var files []backend.FileInfo
	var size int64
	err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		files = append(files, fi)
		size += fi.Size
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("repo: list %s: %w", backend.Index, err)
	}
	return files, size, nil
}

// indexLoadBytes bounds the index file bytes being loaded at once (each
// costs its size until merged: it is merged from its own bytes,
// index.addFile); one file larger than it loads alone.
const indexLoadBytes = 16 << 20

// readIndexFiles merges the named index files into x, a bounded number
// at a time, each as soon as it is read: only a few decoded files are in
// memory at once, whatever the repository size.
func (r *Repository) readIndexFiles(ctx context.Context, x *index, files []backend.FileInfo) error {
	return r.eachIndexFile(ctx, files, x.addFile)
}

// eachIndexFile loads, decrypts and validates the named index files,
// several at once and a bounded number of bytes of them at a time, and
// calls fn with each body and its number of entries as soon as it is
// read (concurrently: fn serializes what it must).
func (r *Repository) eachIndexFile(ctx context.Context, files []backend.FileInfo, fn func(name string, body []byte, n int)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	budget := semaphore.NewWeighted(indexLoadBytes)
	for _, f := range files {
		n := min(max(f.Size, 1), indexLoadBytes)
		if err := budget.Acquire(gctx, n); err != nil {
			break // a load failed: g.Wait reports it
		}
		g.Go(func() error {
			defer budget.Release(n)
			body, n, err := r.loadIndexFile(gctx, f.Name)
			if err == nil {
				fn(f.Name, body, n)
			}
			return err
		})
	}
	return g.Wait()
}

// readIndexFile loads and decodes one index file, decrypting it in place.
func (r *Repository) readIndexFile(ctx context.Context, name string) ([]packInfo, error) {
	body, _, err := r.loadIndexFile(ctx, name)
	if err != nil {
		return nil, err
	}
	packs, _ := decodeIndex(body) // validated
	return packs, nil
}

// loadIndexFile loads, decrypts in place and validates one index file;
// it returns the body and how many entries it names.
func (r *Repository) loadIndexFile(ctx context.Context, name string) ([]byte, int, error) {
	h := backend.Handle{Type: backend.Index, Name: name}
	// Whole, not the listed size: a cache may serve an intact copy of an
	// object whose listed (remote) size is of a damaged one. The size
	// only bounds how many files load at once (readIndexFiles).
	data, err := backend.LoadAll(ctx, r.be, h, 0, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("repo: load index %s: %w", name, err)
	}
	if fileID(data).String() != name {
		return nil, 0, fmt.Errorf("repo: index %s: content hash does not match name: %w (%w)", name, ErrCorrupt, ErrIncomplete)
	}
	body, err := openEnvelopeInPlace(r.crypt, indexMagic, data)
	if err != nil {
		return nil, 0, fmt.Errorf("repo: index %s: %w (%w)", name, err, ErrIncomplete)
	}
	n := 0
	if err := walkIndex(body, func(_ ID, m uint32) bool { n += int(m); return false }, nil); err != nil {
		return nil, 0, fmt.Errorf("repo: index %s: %w (%w)", name, err, ErrIncomplete)
	}
	return body, n, nil
}

// checkedEnvelope verifies a file's name is its hash, then opens it.
func (r *Repository) checkedEnvelope(magic, name string, data []byte) ([]byte, error) {
	if fileID(data).String() != name {
		return nil, fmt.Errorf("content hash does not match name: %w", ErrCorrupt)
	}
	return openEnvelope(r.crypt, magic, data)
}

func (r *Repository) listNames(ctx context.Context, t backend.FileType) ([]string, error) {
	var names []string
	err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repo: list %s: %w", t, err)
	}
	return names, nil
}

// saveFile stores a metadata file under the hash of its bytes. ErrExists
// means identical content is already there, which is success.
func (r *Repository) saveFile(ctx context.Context, t backend.FileType, data []byte) (ID, error) {
	id := fileID(data)
	err := r.be.Save(ctx, backend.Handle{Type: t, Name: id.String()}, data)
	if err != nil && !errors.Is(err, backend.ErrExists) {
		return id, fmt.Errorf("repo: save %s: %w", t, err)
	}
	return id, nil
}

// Config returns the repository's parameters.
func (r *Repository) Config() Config { return *r.cfg }

// Backend returns the underlying backend.
func (r *Repository) Backend() backend.Backend { return r.be }

// AddKey adds a key slot wrapping the master key for another password
// (zero KDFParams: Options.KDF) or key file secret. Existing slots keep
// working; RemoveKey revokes one.
func (r *Repository) AddKey(ctx context.Context, s Secret, p KDFParams) error {
	if r.mk == nil {
		return fmt.Errorf("repo: add key: repository is unencrypted: %w", ErrInvalid)
	}
	if err := r.writable(); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("repo: add key: %w", err)
	}
	if p.none() {
		p = r.opts.KDF
	}
	return addKey(ctx, r.be, s, r.mk, p)
}

// KeyInfo describes a key slot.
type KeyInfo struct {
	ID      string // the slot's object name
	KeyFile bool   // opened by a key file's secret, not a password
	KDF     KDFParams
}

// Keys lists the key slots; damaged ones are skipped.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	names, err := r.listNames(ctx, backend.Keys)
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, n := range names {
		data, err := backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.Keys, Name: n}, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("repo: load key %s: %w", n, err)
		}
		if kf, err := decodeKeyFile(data); err == nil {
			out = append(out, KeyInfo{ID: n, KeyFile: kf.KDF.none(), KDF: kf.KDF})
		}
	}
	return out, nil
}

// RemoveKey deletes the key slot whose ID starts with prefix. The last
// slot is never removed: that would lock everyone out for good.
func (r *Repository) RemoveKey(ctx context.Context, prefix string) error {
	if err := r.writable(); err != nil {
		return err
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	var match []KeyInfo
	for _, k := range keys {
		if strings.HasPrefix(k.ID, prefix) {
			match = append(match, k)
		}
	}
	switch {
	case len(match) == 0 || prefix == "":
		return fmt.Errorf("repo: key %q: %w", prefix, ErrNotFound)
	case len(match) > 1:
		return fmt.Errorf("repo: key prefix %q is ambiguous: %w", prefix, ErrInvalid)
	case len(keys) == 1:
		return fmt.Errorf("repo: key %s is the only one left: %w", match[0].ID[:12], ErrInvalid)
	}
	return r.be.Remove(ctx, backend.Handle{Type: backend.Keys, Name: match[0].ID})
}

// Close releases decoder resources. It does not close the backend.
func (r *Repository) Close() error {
	r.bufs.drop()
	r.idx.close()
	r.zdec.Close()
	r.codec.close()
	return nil
}
