package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

var consoleCmd = &cobra.Command{
	Use:   "console",
	Short: "Print a one-time login link to the host's web console",
	Long: `The web console is served at / on the API's listeners. Over TCP
(serve --api-tcp) a browser logs in with an API token, or with the link
this command prints: it works once, within five minutes, and gives the
browser a session cookie (Secure, HttpOnly, SameSite=Strict). Over the
unix socket (forwarded with ssh -L 8080:DATASTORE/api.sock) no login is
needed.`,
	Args: args(0, 0),
	RunE: func(cmd *cobra.Command, a []string) error {
		return runConsole(cmd.Context(), globals, cmd.OutOrStdout())
	},
}

func init() { rootCmd.AddCommand(consoleCmd) }

func runConsole(ctx context.Context, g globalOptions, out io.Writer) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	l, err := c.ConsoleLink(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, l)
	}
	for _, u := range l.URLs {
		fmt.Fprintln(out, u)
	}
	if len(l.URLs) == 0 {
		fmt.Fprintf(out, "the host serves the API on no TCP address (serve --api-tcp); through a forwarded unix socket the console needs no login.\none-time path: %s\n", l.Path)
	}
	fmt.Fprintf(out, "(valid once, until %s)\n", l.Expires.Local().Format(time.TimeOnly))
	return nil
}
