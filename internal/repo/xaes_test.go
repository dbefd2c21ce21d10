package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/blockwise/blockwise/internal/backend/mem"
	"github.com/blockwise/blockwise/internal/repo/repotest"
)

// TestXAESGCMVectors: the C2SP XAES-256-GCM test vectors.
func TestXAESGCMVectors(t *testing.T) {
	for _, tc := range []struct {
		key     byte
		ad, out string
	}{
		{0x01, "", "ce546ef63c9cc60765923609" + "b33a9a1974e96e52daf2fcf7075e2271"},
		{0x03, "c2sp.org/XAES-256-GCM", "986ec1832593df5443a17943" + "7fd083bf3fdb41abd740a21f71eb769d"},
	} {
		x, err := newXAESGCM(bytes.Repeat([]byte{tc.key}, 32))
		if err != nil {
			t.Fatal(err)
		}
		nonce := []byte("ABCDEFGHIJKLMNOPQRSTUVWX")
		got := x.Seal(nil, nonce, []byte("XAES-256-GCM"), []byte(tc.ad))
		if hex.EncodeToString(got) != tc.out {
			t.Fatalf("key %#x: sealed %x, want %s", tc.key, got, tc.out)
		}
		plain, err := x.Open(nil, nonce, got, []byte(tc.ad))
		if err != nil || string(plain) != "XAES-256-GCM" {
			t.Fatalf("key %#x: open %q %v", tc.key, plain, err)
		}
		got[0] ^= 1
		if _, err := x.Open(nil, nonce, got, []byte(tc.ad)); err == nil {
			t.Fatal("a flipped ciphertext bit opened")
		}
	}
}

// TestCiphers: repositories with either cipher, and one made before the
// choice (no cipher in its config), back up, reopen, restore and check
// clean; an unknown cipher is refused at Init.
func TestCiphers(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{CipherXAES, CipherXChaCha, "legacy"} {
		t.Run(name, func(t *testing.T) {
			be := mem.New()
			opts := testOptions()
			if name != "legacy" {
				opts.Cipher = name
			}
			r := initRepo(t, be, opts)
			want := opts.Cipher
			if name == "" || name == "legacy" {
				want = CipherXAES // the default for new repositories
			}
			if name == "legacy" {
				// What Init wrote before ciphers were configurable.
				r.cfg.Cipher = ""
				r.crypt, _ = newCrypter(r.mk, r.cfg.CipherName())
				cc, _ := newCrypter(r.mk, CipherXChaCha)
				data, err := encodeConfig(cc, r.cfg)
				if err != nil {
					t.Fatal(err)
				}
				be.Remove(ctx, configHandle)
				if err := be.Save(ctx, configHandle, data); err != nil {
					t.Fatal(err)
				}
				want = ""
			}
			if r.cfg.Cipher != want {
				t.Fatalf("cipher %q, want %q", r.cfg.Cipher, want)
			}
			rng := rand.New(rand.NewPCG(9, 10))
			cs := int(r.Config().ChunkSize)
			img := repotest.Image(rng, 40*cs, cs, 0.2)
			m := backup(t, r, nil, img, nil)
			r2, err := Open(ctx, be, testPassword, testSettings())
			if err != nil {
				t.Fatal(err)
			}
			if r2.Config().Cipher != want {
				t.Fatalf("reopened cipher %q, want %q", r2.Config().Cipher, want)
			}
			repotest.Verify(t, r2.OpenImage, m.ID, img)
			repotest.CheckClean(t, r2.Check, CheckOptions{ReadData: true})
		})
	}
	opts := testOptions()
	opts.Cipher = "rot13"
	if _, err := Init(ctx, mem.New(), testPassword, opts); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown cipher: %v", err)
	}
}
