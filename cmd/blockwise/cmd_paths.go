package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/host"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/transport"
)

var pathsOpts transportOptions

var pathsCmd = &cobra.Command{
	Use:   "paths DISK[@SNAPSHOT]",
	Short: "Open an export on every NBD address of the host, probe each path and show its state and counters",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runPaths(cmd.Context(), globals, pathsOpts, args[0], cmd.OutOrStdout())
	},
}

func init() {
	addTransportFlags(pathsCmd.Flags(), &pathsOpts)
	rootCmd.AddCommand(pathsCmd)
}

func runPaths(ctx context.Context, g globalOptions, o transportOptions, export string, out io.Writer) error {
	env, err := o.env(g)
	if err != nil {
		return err
	}
	diskName, snap := host.SplitExport(export)
	ex, err := env.Client.Exports(ctx, diskName, snap)
	if err != nil {
		return err
	}
	uris, opts, release, err := pathURIs(ctx, env, ex.URIs, diskName, snap)
	if err != nil {
		return err
	}
	defer release()
	m, err := nbd.DialMultipath(ctx, uris, nbd.MultipathOptions{Policy: o.Policy, SwitchEvery: 1, Client: opts})
	if err != nil {
		return err
	}
	defer m.Close()
	probePaths(ctx, m, len(uris))
	return printPaths(g, m.Paths(), out)
}

// pathURIs picks the TCP URIs: nbds:// with a ticket from the host
// (revoked by release), else plain nbd:// from an insecure host.
func pathURIs(ctx context.Context, env transport.Env, all []string, diskName, snap string) ([]string, *nbd.ClientOptions, func(), error) {
	pick := func(scheme string) (out []string) {
		for _, u := range all {
			if strings.HasPrefix(u, scheme) {
				out = append(out, u)
			}
		}
		return out
	}
	if uris := pick("nbds://"); len(uris) > 0 {
		tc, release, err := transport.TicketTLS(ctx, env, diskName, snap)
		if err != nil {
			return nil, nil, nil, err
		}
		return uris, &nbd.ClientOptions{TLSConfig: tc}, release, nil
	}
	return pick("nbd://"), &nbd.ClientOptions{}, func() {}, nil
}

// probePaths sends one small read per path (round-robin switching every
// request), so each live path shows a request and a dead one its error.
func probePaths(ctx context.Context, m *nbd.Multipath, n int) {
	buf := make([]byte, min(4096, m.Size()))
	for i := 0; i < n; i++ {
		m.ReadAt(ctx, buf, 0)
	}
	m.Probe()
}

func printPaths(g globalOptions, ps []nbd.PathStats, out io.Writer) error {
	if g.JSON {
		return printJSON(out, ps)
	}
	var rows [][]string
	for _, p := range ps {
		rows = append(rows, []string{p.URI, p.State, strconv.FormatUint(p.Requests, 10), strconv.FormatUint(p.Bytes, 10),
			strconv.FormatUint(p.Errors, 10), strconv.FormatUint(p.Failovers, 10), p.LastError})
	}
	if len(rows) == 0 {
		return fmt.Errorf("the host offers no TCP NBD address for this export")
	}
	return table(out, "PATH\tSTATE\tREQUESTS\tBYTES\tERRORS\tFAILOVERS\tLAST ERROR", rows)
}
