package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/blockwise/blockwise/internal/backend"
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
	if _, err := Open(ctx, be, "", testSettings()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused init left a repository: %v", err)
	}
	o := testOptions()
	o.InsecureNoPassword = true
	r, err := Init(ctx, be, "", o)
	if err != nil {
		t.Fatalf("init with InsecureNoPassword: %v", err)
	}
	r.Close()
	if _, err := Open(ctx, be, "", testSettings()); !errors.Is(err, ErrEmptyPassword) {
		t.Fatalf("open with an empty password, not said to be meant: %v", err)
	}
	if _, err := OpenWith(ctx, be, Secret{Password: "x", InsecureNoPassword: true}, testSettings()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("InsecureNoPassword beside a password: %v", err)
	}
	r, err = OpenWith(ctx, be, Secret{InsecureNoPassword: true}, testSettings())
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
	if _, err := OpenWith(ctx, be2, Secret{InsecureNoPassword: true}, testSettings()); err != nil {
		t.Fatalf("open through the added empty password: %v", err)
	}

	u, err := Init(ctx, mem.New(), "", Options{Unencrypted: true})
	if err != nil {
		t.Fatalf("unencrypted init: %v", err)
	}
	u.Close()
}

// TestKeyFileTextDamage: every single-bit flip of a key file's text, and
// every truncation, reads as damaged (ErrCorrupt) or, where only the
// surrounding white space changed, as the same secret: never as another
// secret, which opening would report as a wrong key. v1 files (no check
// digits) still parse.
func TestKeyFileTextDamage(t *testing.T) {
	text := NewKeyFile()
	secret, err := ParseKeyFile(text)
	if err != nil || len(secret) != 32 {
		t.Fatalf("parse a new key file: %v", err)
	}
	for i := range text {
		for bit := range 8 {
			b := bytes.Clone(text)
			b[i] ^= 1 << bit
			got, err := ParseKeyFile(b)
			if err == nil && !bytes.Equal(got, secret) {
				t.Fatalf("flip of bit %d of byte %d: parsed as another secret", bit, i)
			} else if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %d of byte %d: %v, want ErrCorrupt", bit, i, err)
			}
		}
	}
	for n := range len(text) - 1 { // the last byte is the newline
		if _, err := ParseKeyFile(text[:n]); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "key file damaged") {
			t.Fatalf("key file cut to %d bytes: %v", n, err)
		}
	}
	v1 := []byte(keyFilePrefix + hex.EncodeToString(secret) + "\n")
	if got, err := ParseKeyFile(v1); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("v1 key file: %v", err)
	}
}

// TestDamagedKeySlot: a key slot in keys/ with one byte changed, cut
// short or emptied is reported as damaged (ErrCorrupt, naming it), not as
// a wrong password, when no other slot opens; an intact slot still opens
// beside it; a wrong password with every slot intact stays
// ErrWrongPassword.
func TestDamagedKeySlot(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"flipped byte in the ciphertext", func(b []byte) []byte { b[len(b)-20] ^= 0x40; return b }},
		{"flipped byte in the header", func(b []byte) []byte { b[6] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allowDamage(t)
			be := mem.New()
			r := initRepo(t, be, testOptions())
			defer r.Close()
			keys, err := r.Keys(ctx)
			if err != nil || len(keys) != 1 {
				t.Fatalf("keys %+v %v", keys, err)
			}
			h := backend.Handle{Type: backend.Keys, Name: keys[0].ID}
			data, err := backend.LoadAll(ctx, be, h, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := be.Remove(ctx, h); err != nil {
				t.Fatal(err)
			}
			if err := be.Save(ctx, h, tc.damage(bytes.Clone(data))); err != nil {
				t.Fatal(err)
			}
			for _, pw := range []string{testPassword, "wrong"} {
				_, err := Open(ctx, be, pw, testSettings())
				if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "keys/"+h.Name) {
					t.Fatalf("open with %q: %v, want ErrCorrupt naming keys/%s", pw, err, h.Name)
				}
			}
			if err := r.AddKey(ctx, Secret{Password: "second"}, testKDF); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(ctx, be, "second", testSettings()); err != nil {
				t.Fatalf("an intact slot beside a damaged one: %v", err)
			}
		})
	}
	be := mem.New()
	initRepo(t, be, testOptions())
	if _, err := Open(ctx, be, "wrong", testSettings()); !errors.Is(err, ErrWrongPassword) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong password, slots intact: %v", err)
	}
}
