package api_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/api/apitest"
	"github.com/blockwise/blockwise/internal/testcert"
)

func TestTCPNeedsToken(t *testing.T) {
	e := apitest.Start(t)
	pki := testcert.New(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server}})
	if err != nil {
		t.Fatal(err)
	}
	go e.Server.Serve(l)
	_, secret, err := api.OpenTokens(e.Dir).Create("backup")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + l.Addr().String()
	dial := func(token string) *client.Client {
		c, err := client.New(url, client.Options{Token: token, TLSConfig: &tls.Config{RootCAs: pki.Pool}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	req := client.CreateDiskRequest{Name: "vm1", Size: 1 << 20}
	for _, bad := range []string{"", "wrong", secret + "x"} {
		if _, err := dial(bad).CreateDisk(ctx, req); !errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("token %q: %v", bad, err)
		}
	}
	if names, _ := e.Host.Datastore().List(); len(names) != 0 {
		t.Fatalf("unauthorized request created %v", names)
	}
	if _, err := dial(secret).CreateDisk(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(secret).ListDisks(ctx); err != nil {
		t.Fatal(err)
	}
	// A revoked token stops working at once, though the server never restarted.
	if err := api.OpenTokens(e.Dir).Revoke("backup"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(secret).ListDisks(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
}

func TestTokenStore(t *testing.T) {
	ts := api.OpenTokens(t.TempDir())
	a, sa, err := ts.Create("a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash == sa || len(a.Hash) != 64 {
		t.Fatalf("stored %q for secret %q", a.Hash, sa)
	}
	ts.Create("b")
	if got, ok := ts.Check(sa); !ok || got.ID != a.ID {
		t.Fatal("secret a refused")
	}
	if err := ts.Revoke(a.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := ts.List(); len(list) != 1 || list[0].Name != "b" {
		t.Fatalf("after revoke: %+v", list)
	}
	if err := ts.Revoke("a"); !errors.Is(err, api.ErrTokenNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}
