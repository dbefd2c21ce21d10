package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/api"
	"github.com/blockwise/blockwise/internal/fsutil"
	"github.com/blockwise/blockwise/internal/host"
)

var ticketOpts struct {
	Dir string
	TTL time.Duration
}

var ticketCmd = &cobra.Command{
	Use:   "ticket",
	Short: "Manage NBD tickets: client certificates that open one export over TCP",
	Long: `A host serving NBD on TCP (serve --nbd-tcp) lets in only clients that
present a ticket: a TLS client certificate signed by the host's CA, for
one export (DISK or DISK@SNAPSHOT), until it expires, is removed, its
export is deleted, or the API token that created it is revoked.
Connections already open are not cut. Tickets live in the host's memory:
a restart revokes them all. "create" writes the directory both qemu
(--object tls-creds-x509,id=tls0,endpoint=client,dir=DIR) and libnbd
(nbds://HOST:PORT/EXPORT?tls-certificates=DIR) read.`,
}

func init() {
	create := &cobra.Command{
		Use: "create EXPORT", Short: "Create a ticket; write ca-cert.pem, client-cert.pem, client-key.pem (0600) into --dir", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTicketCreate(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		},
	}
	create.Flags().StringVar(&ticketOpts.Dir, "dir", "", "directory for the credentials (default ./ticket-ID; created 0700)")
	create.Flags().DurationVar(&ticketOpts.TTL, "ttl", 0, "lifetime (default 24h, at most 720h)")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List live tickets", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTicketList(cmd.Context(), globals, cmd.OutOrStdout())
		},
	}
	rm := &cobra.Command{
		Use: "rm ID", Aliases: []string{"revoke"}, Short: "Revoke a ticket: new connections with it are refused", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTicketRm(cmd.Context(), globals, a[0], cmd.OutOrStdout())
		},
	}
	ticketCmd.AddCommand(create, list, rm)
	rootCmd.AddCommand(ticketCmd)
}

func runTicketCreate(ctx context.Context, g globalOptions, export string, out io.Writer) error {
	// The API counts whole seconds and reads 0 as the default (24h):
	// --ttl 500ms must not become a day.
	if ttl := ticketOpts.TTL; ttl != 0 && (ttl < time.Second || ttl > api.MaxTicketTTL) {
		return usageErrorf("--ttl %s: want 1s to %s", ttl, api.MaxTicketTTL)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	dn, sn := host.SplitExport(export)
	tk, err := c.CreateTicket(ctx, dn, sn, ticketOpts.TTL)
	if err != nil {
		return err
	}
	dir := ticketOpts.Dir
	if dir == "" {
		dir = "ticket-" + tk.ID
	}
	if err := writeTicketDir(dir, tk); err != nil {
		c.DeleteTicket(context.WithoutCancel(ctx), tk.ID) // unusable: do not leave it live
		return err
	}
	if g.JSON {
		tk.ClientKey = "" // it is in the directory; not on a terminal
		return printJSON(out, map[string]any{"ticket": tk, "dir": dir})
	}
	abs, _ := filepath.Abs(dir)
	fmt.Fprintf(out, "ticket %s for %s, expires %s\ncredentials in %s\n", tk.ID, tk.Export, tk.Expires.Local().Format(time.RFC3339), abs)
	for _, u := range tk.URIs {
		fmt.Fprintf(out, "%s?tls-certificates=%s\n", u, url.QueryEscape(abs))
	}
	return nil
}

// writeTicketDir writes the credentials in the layout of qemu's
// tls-creds-x509 (endpoint=client) and libnbd's tls-certificates. Each
// file is a fresh 0600 file renamed into place, so a file or symbolic
// link already at that name (planted by whoever can write the
// directory) is replaced, never written through.
func writeTicketDir(dir string, tk *client.Ticket) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string]string{"ca-cert.pem": tk.CACert, "client-cert.pem": tk.ClientCert, "client-key.pem": tk.ClientKey} {
		p := filepath.Join(dir, name)
		if err := fsutil.WriteAtomic(p, []byte(data)); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func runTicketList(ctx context.Context, g globalOptions, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ts, err := c.ListTickets(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, ts)
	}
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{t.ID, t.Export, t.Expires.Local().Format("2006-01-02 15:04:05"), t.Token})
	}
	return table(out, "ID\tEXPORT\tEXPIRES\tTOKEN", rows)
}

func runTicketRm(ctx context.Context, g globalOptions, id string, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	if err := c.DeleteTicket(ctx, id); err != nil {
		return err
	}
	if !g.JSON {
		fmt.Fprintf(out, "revoked %s\n", id)
	}
	return nil
}
