package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/blockwise/blockwise/client"
)

// TicketTLS asks the host for a ticket to export diskName[@snap] and
// returns the TLS configuration that presents it, and a release that
// revokes the ticket (call it when the connections are closed; a
// connection already open outlives its ticket). The host's certificate
// must chain to env.TLS's roots when given, else to the ticket's CA (the
// host's own) or the system roots (an operator's certificate).
func TicketTLS(ctx context.Context, env Env, diskName, snap string) (*tls.Config, func(), error) {
	tk, err := env.Client.CreateTicket(ctx, diskName, snap, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("NBD ticket for %s: %w", exportName(diskName, snap), err)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		env.Client.DeleteTicket(rctx, tk.ID)
	}
	var roots *x509.CertPool
	if env.TLS != nil && env.TLS.RootCAs != nil {
		roots = env.TLS.RootCAs
	} else if sys, err := x509.SystemCertPool(); err == nil {
		roots = sys
		roots.AppendCertsFromPEM([]byte(tk.CACert))
	}
	tc, err := client.TicketTLS(tk, roots)
	if err != nil {
		release()
		return nil, nil, err
	}
	return tc, release, nil
}

func exportName(diskName, snap string) string {
	if snap == "" {
		return diskName
	}
	return diskName + "@" + snap
}
