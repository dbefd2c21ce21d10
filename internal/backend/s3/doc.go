// Package s3 stores a repository in an S3-compatible bucket (AWS S3,
// MinIO, Ceph RGW, versitygw, ...) through minio-go. It is the only place
// in blockwise that speaks S3.
//
// A repository string s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] (see
// ParseURL) names the bucket and an optional key prefix. Keys mirror the
// local backend's directory layout so one description fits both:
// PREFIX/config, PREFIX/keys/NAME, PREFIX/data/XX/NAME (XX = first two
// characters of NAME), PREFIX/index/NAME, PREFIX/manifests/NAME,
// PREFIX/locks/NAME.
//
// Save is a conditional create: a single PUT (or, above the part size, a
// multipart upload whose Complete carries the condition) with
// If-None-Match: *, so the server refuses to replace an existing key and
// answers 412, which becomes backend.ErrExists. Open probes whether the
// server enforces the header; one that ignores it gets a Stat before each
// PUT instead, which is best effort only (two writers racing on one name
// can both "win"; the later object replaces the earlier). Repository
// object names are content hashes, so such a race writes identical bytes
// except for locks, whose names carry a random nonce.
//
// Errors: 404 NoSuchKey is backend.ErrNotFound; throttling (429,
// SlowDown), 5xx, server-side timeouts and network failures are
// backend.ErrTransient, so wrap the backend in backend.Retry (and in
// backend.Limit to bound connections). minio-go's own retries are turned
// off so the two do not multiply.
package s3
