package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/location"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/repo"
)

// repoOptions locate and unlock a repository.
type repoOptions struct {
	Repo         string
	PasswordFile string
	KeyFile      string
	// InsecureNoPassword: the repository's password is empty, and meant
	// to be (restic's flag); without it an empty password is refused.
	InsecureNoPassword bool
	LockWait           time.Duration
	// NoLock: take no lock (readOnly commands only; see noLockHelp).
	NoLock bool
	// LimitUpload and LimitDownload are KiB/s, as in restic (0: none).
	LimitUpload, LimitDownload int64
	// CacheDir is where copies of a remote repository's index files and
	// restore points are kept ("": the user's cache directory); NoCache
	// keeps none.
	CacheDir string
	NoCache  bool
	// Compression is how this command compresses what it writes ("": the
	// repository's default); see addCompressionFlag.
	Compression string
}

// addCompressionFlag adds --compression to a command that writes data
// (backup, prune's repacking, repo init's default), as restic's.
func addCompressionFlag(cmd *cobra.Command, o *repoOptions) {
	cmd.Flags().StringVar(&o.Compression, "compression", os.Getenv("BLOCKWISE_COMPRESSION"),
		"auto (zstd, skipping incompressible chunks), max (zstd, smaller and ~3x slower), lz4 (faster, for fast links and slow CPUs) or off; each chunk records its own, so a repository mixes them (default: the repository's, set by 'repo init'; env BLOCKWISE_COMPRESSION)")
}

func addRepoFlags(cmd *cobra.Command, o *repoOptions) {
	cmd.Flags().StringVarP(&o.Repo, "repo", "r", os.Getenv("BLOCKWISE_REPO"), "repository: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] (env BLOCKWISE_REPO)")
	cmd.Flags().StringVar(&o.PasswordFile, "password-file", os.Getenv("BLOCKWISE_PASSWORD_FILE"), "file holding the repository password (else env BLOCKWISE_PASSWORD)")
	cmd.Flags().StringVar(&o.KeyFile, "key-file", os.Getenv("BLOCKWISE_KEY_FILE"), "key file made by 'repo key add --new-key-file', instead of a password (env BLOCKWISE_KEY_FILE)")
	cmd.Flags().BoolVar(&o.InsecureNoPassword, "insecure-no-password", false, "use an empty password (INSECURE: anyone who can read the repository can read its data); a repository made so needs this flag on every command")
	cmd.Flags().BoolVar(&o.NoLock, "no-lock", false, noLockHelp)
	cmd.Flags().DurationVar(&o.LockWait, "lock-wait", 0, "wait up to this long for another process's repository lock (e.g. a prune) instead of failing")
	cmd.Flags().Int64Var(&o.LimitUpload, "limit-upload", 0, "send at most this many KiB/s to the repository (0: no limit)")
	cmd.Flags().Int64Var(&o.LimitDownload, "limit-download", 0, "receive at most this many KiB/s from the repository (0: no limit)")
	cmd.Flags().StringVar(&o.CacheDir, "cache-dir", os.Getenv("BLOCKWISE_CACHE_DIR"), "keep the local cache here (default $XDG_CACHE_HOME/blockwise or ~/.cache/blockwise; env BLOCKWISE_CACHE_DIR)")
	cmd.Flags().BoolVar(&o.NoCache, "no-cache", false, "keep no local copies of a remote repository's index files and restore points")
}

const noLockHelp = "take no lock, so that a read-only repository (a read-only mount, snapshot or medium) can be read; only for commands that only read (restore, ls, dump, mount, check, snapshots, stats, serve-point, recover, repo info, repo key list). RISK: nothing then stops a prune in another process from deleting data being read: the command may fail, or check report damage that is not there"

// annReadOnly marks the commands that only read the repository: they
// accept --no-lock; every other command refuses it (refuseNoLock).
const annReadOnly = "blockwise/read-only"

func init() {
	for _, c := range []*cobra.Command{restoreCmd, repoCheckCmd, checkCmd, pointsCmd, statsCmd, servePointCmd, recoverCmd, repoInfoCmd, keyListCmd, lsCmd, dumpCmd, mountCmd} {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[annReadOnly] = "true"
	}
	rootCmd.PersistentPreRunE = refuseNoLock
}

// refuseNoLock refuses --no-lock on a command that writes to the
// repository: it would write without the lock that keeps a prune away.
func refuseNoLock(cmd *cobra.Command, _ []string) error {
	if f := cmd.Flags().Lookup("no-lock"); f != nil && f.Changed && cmd.Annotations[annReadOnly] != "true" {
		return usageErrorf("--no-lock is only for commands that only read the repository (restore, ls, dump, mount, check, snapshots, stats, serve-point, recover, repo info, repo key list); %q writes to it", cmd.CommandPath())
	}
	return nil
}

func (o repoOptions) password() (string, error) {
	pw, ok, err := readPassword(o.PasswordFile, "BLOCKWISE_PASSWORD")
	switch {
	case err != nil:
		return "", err
	case o.InsecureNoPassword && pw != "":
		return "", usageErrorf("--insecure-no-password, and a password is given (--password-file or BLOCKWISE_PASSWORD): give one or the other")
	case o.InsecureNoPassword:
		return "", nil
	case !ok:
		return "", usageErrorf("no password: set BLOCKWISE_PASSWORD or --password-file")
	case pw == "":
		return "", usageErrorf("%s: an empty password is not allowed (anyone could read the repository); pass --insecure-no-password if that is meant", passwordSource(o.PasswordFile, "BLOCKWISE_PASSWORD"))
	}
	return pw, nil
}

// passwordSource names where readPassword found a password.
func passwordSource(file, env string) string {
	if file != "" {
		return "password file " + file
	}
	return env
}

// readPassword reads a password from file when given, else from the
// environment variable env; ok reports whether there was one.
func readPassword(file, env string) (pw string, ok bool, err error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", false, err
		}
		return strings.TrimRight(string(b), "\r\n"), true, nil
	}
	pw, ok = os.LookupEnv(env)
	return pw, ok, nil
}

// backend opens a directory or an s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]
// repository (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or
// the AWS config files).
func (o repoOptions) backend(ctx context.Context) (backend.Backend, error) {
	if o.Repo == "" {
		return nil, usageErrorf("no repository: set --repo or BLOCKWISE_REPO")
	}
	if o.LimitUpload < 0 || o.LimitDownload < 0 {
		return nil, usageErrorf("--limit-upload and --limit-download take KiB/s, 0 or more")
	}
	return location.Open(ctx, o.Repo, location.Options{LimitUpload: o.LimitUpload << 10, LimitDownload: o.LimitDownload << 10})
}

// secret is what unlocks the repository: the key file when given, else
// the password.
func (o repoOptions) secret() (repo.Secret, error) {
	if o.KeyFile != "" && o.InsecureNoPassword {
		return repo.Secret{}, usageErrorf("--key-file and --insecure-no-password exclude each other")
	}
	if o.KeyFile != "" {
		text, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return repo.Secret{}, usageErrorf("key file: %w", err)
		}
		secret, err := repo.ParseKeyFile(text)
		if err != nil { // repo.ErrCorrupt: exit 6, not a wrong key
			return repo.Secret{}, fmt.Errorf("key file %s: %w", o.KeyFile, err)
		}
		if fi, err := os.Stat(o.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(os.Stderr, "blockwise: warning: key file %s is accessible to other users (mode %v): anyone who can read it can read the repository\n", o.KeyFile, fi.Mode().Perm())
		}
		return repo.Secret{KeyFile: secret}, nil
	}
	pw, err := o.password()
	return repo.Secret{Password: pw, InsecureNoPassword: o.InsecureNoPassword}, err
}

func (o repoOptions) open(ctx context.Context) (*repo.Repository, error) {
	return o.openWith(ctx, repo.OpenWith, true)
}

// openNoIndex opens the repository without reading its index files (for
// check and repair index, which must work when one is damaged). It reads
// the repository itself, never the cache: check must see what is stored.
func (o repoOptions) openNoIndex(ctx context.Context) (*repo.Repository, error) {
	return o.openWith(ctx, repo.OpenNoIndex, false)
}

// openUnindexed opens the repository without reading its index files,
// through the cache, for stats and prune: they read the index files
// themselves (repo's Stats and PruneWith), and an index of every blob
// spills to disk in a large repository (docs/performance.md,
// "Repositories of millions of chunks").
func (o repoOptions) openUnindexed(ctx context.Context) (*repo.Repository, error) {
	return o.openWith(ctx, repo.OpenNoIndex, true)
}

func (o repoOptions) openWith(ctx context.Context, open func(context.Context, backend.Backend, repo.Secret, repo.Options) (*repo.Repository, error), cached bool) (*repo.Repository, error) {
	tightenGC() // before the index loads
	secret, err := o.secret()
	if err != nil {
		return nil, err
	}
	settings, err := o.settings()
	if err != nil {
		return nil, err
	}
	cacheDir := settings.CacheDir
	remote := strings.HasPrefix(o.Repo, "s3:")
	if o.Repo != "" && !remote {
		// Opening a local backend creates its directories: look first.
		if _, err := os.Stat(filepath.Join(o.Repo, "config")); err != nil {
			return nil, fmt.Errorf("no repository at %s (create one with blockwise repo init): %w", o.Repo, repo.ErrNotFound)
		}
	}
	be, err := o.backend(ctx)
	if err != nil {
		return nil, err
	}
	if cached && cacheDir != "" && remote {
		be = backend.NewCache(be, objectCacheDir(cacheDir, o.Repo), repo.ContentNamed, backend.Index, backend.Manifests)
	}
	r, err := open(ctx, be, secret, settings)
	if err != nil {
		be.Close()
		return nil, err
	}
	r.SetLockWait(o.LockWait)
	r.SetNoLock(o.NoLock)
	return r, nil
}

// tightenGC lets the heap grow 25% past what is live before a collection
// instead of the runtime's 100%, unless GOGC says otherwise. A command's
// memory is mostly the repository index (its table, Bloom filters, a blob
// set), which holds no pointers, so a collection costs a few milliseconds
// however often it runs; at the default, a 10 M-chunk repository's
// backup peaked at twice its 125 MiB of live index (docs/performance.md,
// "Repositories of millions of chunks").
func tightenGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
}

// openPoint opens the repository and resolves the restore point ref in it
// (see backup.FindPoint); the caller closes the repository.
func (o repoOptions) openPoint(ctx context.Context, ref, disk string) (*repo.Repository, *repo.Manifest, error) {
	r, err := o.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	m, err := backup.FindPoint(ctx, r, ref, disk)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, m, nil
}

// settings are the repository's settings for this command: its cache
// (restore point heads; CacheDir) and the index's spill files
// (IndexSpillDir) go to --cache-dir or the user's cache directory
// ($XDG_CACHE_HOME/blockwise or ~/.cache/blockwise: /tmp is often
// memory-backed), and BLOCKWISE_INDEX_BLOBS is the most blobs the index
// keeps in memory (default repo.DefaultIndexMemoryBlobs; 0 for no
// limit). CacheDir is "" with --no-cache or when there is none to be had.
func (o repoOptions) settings() (repo.Options, error) {
	var s repo.Options
	if o.Compression != "" {
		c, err := repo.CanonicalCompression(o.Compression)
		if err != nil {
			return s, usageErrorf("--compression %q: want auto, max, lz4 or off", o.Compression)
		}
		s.Compression = c
	}
	if v := os.Getenv("BLOCKWISE_INDEX_BLOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return s, usageErrorf("BLOCKWISE_INDEX_BLOBS=%q: want a number of blobs", v)
		}
		s.IndexMemoryBlobs = n
		if n == 0 {
			s.IndexMemoryBlobs = -1 // repo.Options: negative is no limit
		}
	}
	dir := o.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return s, nil
		}
		dir = filepath.Join(base, "blockwise")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		// As restic: a command runs without its cache rather than not at all.
		fmt.Fprintf(os.Stderr, "blockwise: warning: no cache: %v\n", err)
		return s, nil
	}
	s.IndexSpillDir = dir // scratch space, not a cache: kept with --no-cache
	if !o.NoCache {
		s.CacheDir = dir
	}
	return s, nil
}

// objectCacheDir is where the copies of one remote repository's files
// live: named after its location, which is safe because the copies are
// content-addressed and checked against their names on every read.
func objectCacheDir(cacheDir, location string) string {
	sum := sha256.Sum256([]byte(location))
	return filepath.Join(cacheDir, "remote", hex.EncodeToString(sum[:8]))
}
