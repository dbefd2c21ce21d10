package location_test

import (
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/backend/location"
)

func TestOpen(t *testing.T) {
	be, err := location.Open(t.Context(), t.TempDir(), location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), backend.Handle{Type: backend.Index, Name: "x1"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := location.Open(t.Context(), "s3:ftp://h/b", location.Options{}); !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("bad s3 URL: %v", err)
	}
}

// A local repository is retried whether or not it is throttled (the CLI
// once added Retry only to a bare local backend, so a throttle hid it).
func TestOpenLocalRetried(t *testing.T) {
	for _, o := range []location.Options{{}, {LimitUpload: 1 << 20}, {LimitDownload: 1 << 20}} {
		be, err := location.Open(t.Context(), t.TempDir(), o)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := be.(*backend.Retry); !ok {
			t.Errorf("%+v: %T, want *backend.Retry", o, be)
		}
		be.Close()
	}
}
