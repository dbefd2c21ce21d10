package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/transport"
)

// transportOptions are the flags shared by backup, restore and paths.
type transportOptions struct {
	Order       string
	NBDCA       string
	Conns       int
	Policy      string
	SwitchEvery int
	SANDir      string
}

func addTransportFlags(f *pflag.FlagSet, o *transportOptions) {
	f.StringVar(&o.Order, "transport", transport.DefaultOrder, "transport modes to try, in order (san, hotadd, nbdssl, nbd)")
	f.StringVar(&o.NBDCA, "nbd-ca", "", "PEM CA bundle that must vouch for the host's NBD certificate (nbdssl; default system roots)")
	f.IntVar(&o.Conns, "nbd-conns", 4, "NBD connections per export when it allows multi-conn")
	f.StringVar(&o.Policy, "path-policy", nbd.PolicyRoundRobin, "multipath policy when the host has several NBD addresses: fixed, mru, round-robin")
	f.IntVar(&o.SwitchEvery, "path-switch", 1000, "round-robin: requests per path before switching")
	f.StringVar(&o.SANDir, "san-datastore", "", "the host's datastore as mounted here, for san (default: --datastore)")
}

// defaultTransportOptions are the transport flags' defaults, for callers
// that take no flags (the demo).
func defaultTransportOptions() transportOptions {
	var o transportOptions
	addTransportFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError), &o)
	return o
}

// env builds the transport environment from the global and transport flags.
func (o transportOptions) env(g globalOptions) (transport.Env, error) {
	if !nbd.ValidPolicy(o.Policy) {
		return transport.Env{}, usageErrorf("--path-policy %q: want fixed, mru or round-robin", o.Policy)
	}
	c, err := g.client()
	if err != nil {
		return transport.Env{}, err
	}
	env := transport.Env{Client: c, HostURL: g.hostURL(), Datastore: o.SANDir, Conns: o.Conns,
		Policy: o.Policy, SwitchEvery: o.SwitchEvery}
	if env.Datastore == "" {
		env.Datastore = g.Datastore
	}
	if o.NBDCA != "" {
		pem, err := os.ReadFile(o.NBDCA)
		if err != nil {
			return env, fmt.Errorf("--nbd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return env, fmt.Errorf("--nbd-ca %s: no PEM certificates", o.NBDCA)
		}
		env.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	}
	return env, nil
}
