package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/host"
)

var exportAll bool

var exportCmd = &cobra.Command{
	Use:   "export DISK[@SNAPSHOT]",
	Short: "Print the NBD URI of a disk or snapshot",
	Long: `Print the preferred NBD URI (the unix socket when NBD listens on one)
of the live disk or of a snapshot; --all prints every URI, one a line.`,
	Args: args(1, 1),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runExport(cmd.Context(), globals, exportAll, a, cmd.OutOrStdout())
	},
}

func init() {
	exportCmd.Flags().BoolVar(&exportAll, "all", false, "print every URI (unix, TLS, TCP)")
	rootCmd.AddCommand(exportCmd)
}

func runExport(ctx context.Context, g globalOptions, all bool, a []string, out io.Writer) error {
	dn, sn := host.SplitExport(a[0])
	c, err := g.client()
	if err != nil {
		return err
	}
	e, err := c.Exports(ctx, dn, sn)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, e)
	}
	if len(e.URIs) == 0 {
		return errors.New("export: the host's NBD server has no listener")
	}
	if !all {
		e.URIs = e.URIs[:1]
	}
	for _, u := range e.URIs {
		fmt.Fprintln(out, u)
	}
	return nil
}
