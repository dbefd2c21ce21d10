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
