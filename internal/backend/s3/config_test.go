package s3

import (
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/minio/minio-go/v7"
)

func TestParseURL(t *testing.T) {
	path, dns := minio.BucketLookupPath, minio.BucketLookupDNS
	tests := []struct {
		in   string
		want Config
	}{
		{"s3:http://127.0.0.1:7070/bkt", Config{Endpoint: "127.0.0.1:7070", Bucket: "bkt", Lookup: path, Create: CreateAuto}},
		{"s3:https://minio.example:9000/bkt/a/b/", Config{Endpoint: "minio.example:9000", Secure: true, Bucket: "bkt", Prefix: "a/b", Lookup: path, Create: CreateAuto}},
		{"s3:https://s3.eu-west-1.amazonaws.com/bkt/p", Config{Endpoint: "s3.eu-west-1.amazonaws.com", Secure: true, Bucket: "bkt", Prefix: "p", Lookup: dns, Create: CreateAuto}},
		{"s3:https://s3.amazonaws.com/bkt?lookup=path&region=us-west-2", Config{Endpoint: "s3.amazonaws.com", Secure: true, Bucket: "bkt", Region: "us-west-2", Lookup: path, Create: CreateAuto}},
		{"s3:http://h/bkt?lookup=dns&create=stat&partsize=8388608", Config{Endpoint: "h", Bucket: "bkt", Lookup: dns, Create: CreateStat, PartSize: 8 << 20}},
		{"s3:http://[::1]:9000/bkt?create=conditional", Config{Endpoint: "[::1]:9000", Bucket: "bkt", Lookup: path, Create: CreateConditional}},
	}
	for _, tc := range tests {
		got, err := ParseURL(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, in := range []string{
		"", "/srv/repo", "s3:", "s3:ftp://h/b", "s3:http:///b", "s3:http://h", "s3:http://h/",
		"s3:http://user:pw@h/b", "s3:http://h/b//p", "s3:http://h/b?lookup=auto",
		"s3:http://h/b?create=maybe", "s3:http://h/b?partsize=1", "s3:http://h/b?bogus=1",
		"s3:http://h/b?region=a&region=b", "s3:http://h/b#frag",
	} {
		if _, err := ParseURL(in); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%q: want ErrInvalid, got %v", in, err)
		}
	}
}

func TestURLRoundTrip(t *testing.T) {
	for _, in := range []string{"s3:http://127.0.0.1:7070/bkt", "s3:https://h:1/bkt/a/b"} {
		c, err := ParseURL(in)
		if err != nil || c.String() != in {
			t.Errorf("%s -> %s (%v)", in, c.String(), err)
		}
	}
}
