package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/minio/minio-go/v7"
)

// Backend is an S3 bucket (or a prefix in one) holding a repository.
type Backend struct {
	core     minio.Core
	bucket   string
	prefix   string // "" or "PREFIX/"
	create   CreateMode
	partSize int64
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to cfg's endpoint, checks that the bucket exists and, for
// CreateAuto, probes whether the server honours If-None-Match.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	creds := cfg.Creds
	if creds == nil {
		creds = credentialChain()
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Secure,
		Region:       cfg.Region,
		BucketLookup: cfg.Lookup,
		// Retries belong to backend.Retry, which knows which errors are
		// worth it and how a lost acknowledgement looks; minio-go's own
		// ten retries would multiply with them.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %v: %w: %w", cfg, backend.ErrInvalid, err)
	}
	b := &Backend{core: minio.Core{Client: client}, bucket: cfg.Bucket, create: cfg.Create, partSize: cfg.PartSize}
	if cfg.Prefix != "" {
		b.prefix = strings.Trim(cfg.Prefix, "/") + "/"
	}
	if b.partSize == 0 {
		b.partSize = DefaultPartSize
	}
	if err := b.checkBucket(ctx); err != nil {
		return nil, err
	}
	if b.create == CreateAuto || b.create == "" {
		if b.create, err = b.probeConditional(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *Backend) checkBucket(ctx context.Context) error {
	ok, err := b.core.BucketExists(ctx, b.bucket)
	if err != nil {
		return mapErr("open bucket", b.bucket, err)
	}
	if !ok {
		return fmt.Errorf("s3: bucket %q does not exist (create it first)", b.bucket)
	}
	return nil
}

// CreateMode reports the conditional-create mode in force.
func (b *Backend) CreateMode() CreateMode { return b.create }

func (b *Backend) key(h backend.Handle) string {
	switch h.Type {
	case backend.Config:
		return b.prefix + "config"
	case backend.Data:
		return b.prefix + "data/" + h.Name[:2] + "/" + h.Name
	}
	return b.prefix + string(h.Type) + "/" + h.Name
}

// probeConditional writes a scratch object twice with If-None-Match: *.
// A server that refuses the second write enforces conditional creates; one
// that accepts it (or rejects the header as unimplemented) does not, and
// Save falls back to checking before writing.
func (b *Backend) probeConditional(ctx context.Context) (CreateMode, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := b.prefix + "probe-" + hex.EncodeToString(rnd[:])
	defer b.core.RemoveObject(context.WithoutCancel(ctx), b.bucket, key, minio.RemoveObjectOptions{})
	mode := CreateConditional
	for i := range 2 {
		err := b.putSingle(ctx, key, nil, true)
		var resp minio.ErrorResponse
		switch {
		case err == nil && i == 1:
			mode = CreateStat
		case err == nil:
		case errors.As(err, &resp) && resp.StatusCode == http.StatusNotImplemented:
			return CreateStat, nil
		case i == 1 && errors.As(err, &resp) && resp.StatusCode == http.StatusPreconditionFailed:
		default:
			return "", mapErr("probe conditional create", key, err)
		}
	}
	return mode, nil
}

// Save implements backend.Backend.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := h.Valid(); err != nil {
		return err
	}
	if b.create == CreateStat {
		// Best effort: a writer racing us between Stat and PUT wins or
		// loses silently. Only servers without If-None-Match get here.
		if _, err := b.Stat(ctx, h); err == nil {
			return fmt.Errorf("s3: save %v: %w", h, backend.ErrExists)
		} else if !errors.Is(err, backend.ErrNotFound) {
			return err
		}
	}
	var err error
	if int64(len(data)) > b.partSize {
		err = b.putMultipart(ctx, b.key(h), data)
	} else {
		err = b.putSingle(ctx, b.key(h), data, b.create != CreateStat)
	}
	return mapErr("save", h, err)
}

// putSingle sends the body as UNSIGNED-PAYLOAD: signing it means a
// SHA-256 pass over every pack on each side, a sixth of a full backup's
// time to S3 here, and the repository verifies every blob it reads
// (authenticated encryption and keyed IDs) anyway. (minio-go's default
// over plain http, the aws-chunked streaming signature, is avoided:
// versitygw v1.8.0 mis-parses it for empty bodies and leaves bytes on a
// kept-alive connection.)
func (b *Backend) putSingle(ctx context.Context, key string, data []byte, conditional bool) error {
	opts := minio.PutObjectOptions{DisableContentSha256: true}
	if conditional {
		opts.SetMatchETagExcept("*")
	}
	_, err := b.core.PutObject(ctx, b.bucket, key, bytes.NewReader(data), int64(len(data)), "", "", opts)
	return err
}

// Load implements backend.Backend with one (ranged) GET.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := h.Valid(); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("s3: load %v: negative range: %w", h, backend.ErrInvalid)
	}
	var opts minio.GetObjectOptions
	if length > 0 {
		opts.SetRange(offset, offset+length-1)
	} else if offset > 0 {
		opts.SetRange(offset, 0)
	}
	rd, info, hdr, err := b.core.GetObject(ctx, b.bucket, b.key(h), opts)
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return b.loadPastEnd(ctx, h, offset, length)
		}
		return nil, mapErr("load", h, err)
	}
	want := length
	if want == 0 {
		want = info.Size
	}
	if err := checkRangeReply(hdr, info.Size, offset, want); err != nil {
		rd.Close()
		return nil, fmt.Errorf("s3: load %v: %w", h, err)
	}
	return &exactReader{rd: rd, left: want, h: h}, nil
}

// loadPastEnd handles a range the server refused: only an empty read at
// exactly the end of the object is valid, and S3 cannot express it.
func (b *Backend) loadPastEnd(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return nil, err
	}
	if _, err := backend.CheckRange(h, fi.Size, offset, length); err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// checkRangeReply makes sure the server sent the bytes asked for: S3
// clamps a range that runs past the end instead of failing it.
func checkRangeReply(hdr http.Header, size, offset, want int64) error {
	if size != want {
		return fmt.Errorf("range %d+%d past the end (got %d bytes): %w", offset, want, size, backend.ErrInvalid)
	}
	cr := hdr.Get("Content-Range")
	if offset == 0 && cr == "" {
		return nil
	}
	start, _, _ := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-")
	if got, err := strconv.ParseInt(start, 10, 64); err != nil || got != offset {
		return fmt.Errorf("server answered range %q for offset %d: %w", cr, offset, backend.ErrTransient)
	}
	return nil
}

// exactReader fails a body that ends early, which a dropped connection
// can otherwise turn into a silently short read.
type exactReader struct {
	rd   io.ReadCloser
	left int64
	h    backend.Handle
}

// Read implements io.Reader.
func (r *exactReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rd.Read(p)
	r.left -= int64(n)
	switch {
	case r.left == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, fmt.Errorf("s3: load %v: body ended %d bytes early: %w: %w", r.h, r.left, backend.ErrTransient, io.ErrUnexpectedEOF)
	case err != nil:
		return n, mapErr("load", r.h, err)
	}
	return n, nil
}

// Close implements io.Closer.
func (r *exactReader) Close() error { return r.rd.Close() }

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := h.Valid(); err != nil {
		return backend.FileInfo{}, err
	}
	info, err := b.core.StatObject(ctx, b.bucket, b.key(h), minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, mapErr("stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: info.Size}, nil
}

// List implements backend.Backend. minio-go pages through ListObjectsV2
// (1000 keys a request); objects that are not valid handles of type t,
// such as foreign keys under the prefix, are skipped.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.Config {
		return b.listConfig(ctx, fn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine if fn fails
	opts := minio.ListObjectsOptions{Prefix: b.prefix + string(t) + "/", Recursive: true}
	for obj := range b.core.Client.ListObjects(ctx, b.bucket, opts) {
		if obj.Err != nil {
			return mapErr("list", t, obj.Err)
		}
		h := backend.Handle{Type: t, Name: path.Base(obj.Key)}
		if h.Valid() != nil || b.key(h) != obj.Key {
			continue
		}
		if err := fn(backend.FileInfo{Name: h.Name, Size: obj.Size}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (b *Backend) listConfig(ctx context.Context, fn func(backend.FileInfo) error) error {
	fi, err := b.Stat(ctx, backend.Handle{Type: backend.Config, Name: "config"})
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return fn(fi)
}

// Remove implements backend.Backend. S3's DELETE succeeds on a missing
// key, so a Stat first provides the contract's ErrNotFound; two removers
// racing on one name may therefore both succeed.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if _, err := b.Stat(ctx, h); err != nil {
		return err
	}
	err := b.core.RemoveObject(ctx, b.bucket, b.key(h), minio.RemoveObjectOptions{})
	return mapErr("remove", h, err)
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }
