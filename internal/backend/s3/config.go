package s3

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// CreateMode selects how Save guarantees it never replaces an object.
type CreateMode string

// Create modes; see the package documentation for the guarantee of each.
const (
	// CreateAuto probes the server at Open and uses CreateConditional if
	// it honours If-None-Match, CreateStat otherwise.
	CreateAuto CreateMode = "auto"
	// CreateConditional sends If-None-Match: * and trusts the server to
	// refuse an existing key atomically.
	CreateConditional CreateMode = "conditional"
	// CreateStat checks for the key before the PUT: best effort only,
	// two writers racing on one name can both succeed.
	CreateStat CreateMode = "stat"
)

// Defaults.
const (
	// DefaultPartSize is the multipart part size and the threshold above
	// which Save switches to multipart. Packs (16 MiB by default) stay
	// single PUTs: one request, no multipart bookkeeping.
	DefaultPartSize = 64 << 20
	minPartSize     = 5 << 20 // S3's minimum for all parts but the last
)

// Config says where a repository lives on S3 and how to reach it.
type Config struct {
	Endpoint string // HOST[:PORT]
	Secure   bool   // https
	Bucket   string
	Prefix   string // key prefix without leading or trailing slash; may be empty
	Region   string // empty: ask the server (minio-go caches the answer)
	Lookup   minio.BucketLookupType
	Create   CreateMode
	PartSize int64 // multipart threshold and part size; 0 means DefaultPartSize

	// Creds overrides the credential chain (environment, then AWS
	// shared config/credentials files); tests set it.
	Creds *credentials.Credentials
}

// ParseURL parses a repository string
//
//	s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX][?lookup=path|dns&region=R&create=auto|conditional|stat&partsize=BYTES]
//
// Path-style lookup is the default except for AWS endpoints, which use
// virtual-host style as AWS recommends.
func ParseURL(s string) (Config, error) {
	rest, ok := strings.CutPrefix(s, "s3:")
	if !ok {
		return Config{}, fmt.Errorf("s3: %q does not start with s3: %w", s, backend.ErrInvalid)
	}
	u, err := url.Parse(rest)
	if err != nil {
		return Config{}, fmt.Errorf("s3: %q: %w: %w", s, backend.ErrInvalid, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return Config{}, fmt.Errorf("s3: %q: want s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]: %w", s, backend.ErrInvalid)
	}
	path := strings.Trim(u.Path, "/")
	bucket, prefix, _ := strings.Cut(path, "/")
	if bucket == "" || strings.Contains(path, "//") {
		return Config{}, fmt.Errorf("s3: %q: missing bucket or empty path element: %w", s, backend.ErrInvalid)
	}
	cfg := Config{Endpoint: u.Host, Secure: u.Scheme == "https", Bucket: bucket, Prefix: prefix, Create: CreateAuto}
	if err := cfg.applyQuery(u.Query()); err != nil {
		return Config{}, fmt.Errorf("s3: %q: %w", s, err)
	}
	return cfg, nil
}

func (c *Config) applyQuery(q url.Values) error {
	c.Lookup = defaultLookup(c.Endpoint)
	for k, vs := range q {
		if len(vs) != 1 {
			return fmt.Errorf("option %s given %d times: %w", k, len(vs), backend.ErrInvalid)
		}
		if err := c.applyOption(k, vs[0]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) applyOption(k, v string) error {
	switch k {
	case "lookup":
		switch v {
		case "path":
			c.Lookup = minio.BucketLookupPath
		case "dns":
			c.Lookup = minio.BucketLookupDNS
		default:
			return fmt.Errorf("lookup=%q: want path or dns: %w", v, backend.ErrInvalid)
		}
	case "region":
		c.Region = v
	case "create":
		switch m := CreateMode(v); m {
		case CreateAuto, CreateConditional, CreateStat:
			c.Create = m
		default:
			return fmt.Errorf("create=%q: want auto, conditional or stat: %w", v, backend.ErrInvalid)
		}
	case "partsize":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < minPartSize || n > 5<<30 {
			return fmt.Errorf("partsize=%q: want bytes in [5MiB,5GiB]: %w", v, backend.ErrInvalid)
		}
		c.PartSize = n
	default:
		return fmt.Errorf("unknown option %q: %w", k, backend.ErrInvalid)
	}
	return nil
}

func defaultLookup(host string) minio.BucketLookupType {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	if strings.HasSuffix(h, ".amazonaws.com") || strings.HasSuffix(h, ".amazonaws.com.cn") {
		return minio.BucketLookupDNS
	}
	return minio.BucketLookupPath
}

// String renders the config back as a repository string (without
// credentials, which never appear in it).
func (c Config) String() string {
	scheme := "http"
	if c.Secure {
		scheme = "https"
	}
	s := "s3:" + scheme + "://" + c.Endpoint + "/" + c.Bucket
	if c.Prefix != "" {
		s += "/" + c.Prefix
	}
	return s
}

// credentialChain is the usual AWS order: environment variables, then the
// shared config and credentials files (AWS_PROFILE selects the profile).
// The EC2 metadata service is left out on purpose: probing it from a
// machine that is not on EC2 sends traffic to a link-local address.
func credentialChain() *credentials.Credentials {
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
	})
}
