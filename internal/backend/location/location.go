// Package location turns a --repo argument into a ready Backend, so
// commands accept a directory and an s3: URL alike without knowing
// either backend.
package location

import (
	"context"
	"strings"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backend/s3"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Defaults for remote repositories: enough connections to keep a
// loopback or LAN object store busy, and retries that ride out a few
// seconds of throttling or a server restart.
const (
	S3Connections = 16
	S3Attempts    = 8
	// LocalAttempts rides out a passing error of a local or network file
	// system (NFS, a full disk freed meanwhile).
	LocalAttempts = 5
)

// Options tune the opened backend.
type Options struct {
	// LimitUpload and LimitDownload bound the bytes per second sent and
	// received (0: unlimited), through backend.Throttle.
	LimitUpload, LimitDownload int64
	// AccessKey and SecretKey, when set, are an s3: repository's
	// credentials instead of the environment's and AWS files'.
	AccessKey, SecretKey string
}

// Open opens "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]" (see s3.ParseURL)
// wrapped in Retry and Limit, or else a local directory wrapped in Retry;
// either is throttled innermost when o asks for it.
func Open(ctx context.Context, repo string, o Options) (backend.Backend, error) {
	if !strings.HasPrefix(repo, "s3:") {
		be, err := local.Open(repo)
		if err != nil {
			return nil, err
		}
		return backend.NewRetry(throttle(be, o), LocalAttempts), nil
	}
	cfg, err := s3.ParseURL(repo)
	if err != nil {
		return nil, err
	}
	if o.AccessKey != "" || o.SecretKey != "" {
		cfg.Creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	}
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return backend.NewRetry(backend.NewLimit(throttle(be, o), S3Connections), S3Attempts), nil
}

func throttle(be backend.Backend, o Options) backend.Backend {
	if o.LimitUpload <= 0 && o.LimitDownload <= 0 {
		return be
	}
	return backend.NewThrottle(be, o.LimitUpload, o.LimitDownload)
}
