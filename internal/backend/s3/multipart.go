package s3

import (
	"bytes"
	"context"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
)

// partWorkers bounds the parts of one object in flight. Callers already
// run several Saves at once; this only keeps one large object from being
// uploaded strictly serially.
const partWorkers = 4

// putMultipart uploads data in parts and completes the upload with
// If-None-Match: *. minio-go's PutObject would do the multipart itself
// but drops conditional headers from CompleteMultipartUpload, which is
// where S3 evaluates them, so the parts are driven through minio.Core.
// An upload that fails is aborted; one cut short by a crash stays
// invisible (S3 never lists incomplete uploads) until the bucket's
// AbortIncompleteMultipartUpload lifecycle rule reaps it.
func (b *Backend) putMultipart(ctx context.Context, key string, data []byte) error {
	id, err := b.core.NewMultipartUpload(ctx, b.bucket, key, minio.PutObjectOptions{})
	if err != nil {
		return err
	}
	parts, err := b.putParts(ctx, key, id, data)
	if err == nil {
		opts := minio.PutObjectOptions{}
		if b.create != CreateStat {
			opts.SetMatchETagExcept("*")
		}
		_, err = b.core.CompleteMultipartUpload(ctx, b.bucket, key, id, parts, opts)
	}
	if err != nil {
		b.core.AbortMultipartUpload(context.WithoutCancel(ctx), b.bucket, key, id)
	}
	return err
}

func (b *Backend) putParts(ctx context.Context, key, id string, data []byte) ([]minio.CompletePart, error) {
	n := (int64(len(data)) + b.partSize - 1) / b.partSize
	parts := make([]minio.CompletePart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partWorkers)
	for i := range n {
		g.Go(func() error {
			chunk := data[i*b.partSize : min((i+1)*b.partSize, int64(len(data)))]
			p, err := b.core.PutObjectPart(gctx, b.bucket, key, id, int(i+1),
				bytes.NewReader(chunk), int64(len(chunk)),
				minio.PutObjectPartOptions{DisableContentSha256: true}) // see putSingle
			parts[i] = minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag}
			return err
		})
	}
	return parts, g.Wait()
}
