package repo

import (
	"context"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
)

// TestEmptyPassword: an empty password creates, opens and adds nothing
// unless InsecureNoPassword says it is meant (restic's
// --insecure-no-password); with it, the repository works and opens with
// the same statement only. An unencrypted repository needs no password.
func TestEmptyPassword(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	if _, err := Init(ctx, be, "", testOptions()); !errors.Is(err, ErrEmptyPassword) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("init with an empty password: %v", err)
	}
	if _, err := Open(ctx, be, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused init left a repository: %v", err)
	}
	o := testOptions()
	o.InsecureNoPassword = true
	r, err := Init(ctx, be, "", o)
	if err != nil {
		t.Fatalf("init with InsecureNoPassword: %v", err)
	}
	r.Close()
	if _, err := Open(ctx, be, ""); !errors.Is(err, ErrEmptyPassword) {
		t.Fatalf("open with an empty password, not said to be meant: %v", err)
	}
	if _, err := OpenWith(ctx, be, Secret{Password: "x", InsecureNoPassword: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("InsecureNoPassword beside a password: %v", err)
	}
	r, err = OpenWith(ctx, be, Secret{InsecureNoPassword: true})
	if err != nil {
		t.Fatalf("open with InsecureNoPassword: %v", err)
	}
	defer r.Close()

	be2 := mem.New()
	r2 := initRepo(t, be2, testOptions())
	defer r2.Close()
	if err := r2.AddKey(ctx, Secret{}, testKDF); !errors.Is(err, ErrEmptyPassword) {
		t.Fatalf("add an empty password: %v", err)
	}
	if keys, _ := r2.Keys(ctx); len(keys) != 1 {
		t.Fatalf("a refused key was added: %+v", keys)
	}
	if err := r2.AddKey(ctx, Secret{InsecureNoPassword: true}, testKDF); err != nil {
		t.Fatalf("add an empty password with InsecureNoPassword: %v", err)
	}
	if _, err := OpenWith(ctx, be2, Secret{InsecureNoPassword: true}); err != nil {
		t.Fatalf("open through the added empty password: %v", err)
	}

	u, err := Init(ctx, mem.New(), "", Options{Unencrypted: true})
	if err != nil {
		t.Fatalf("unencrypted init: %v", err)
	}
	u.Close()
}
