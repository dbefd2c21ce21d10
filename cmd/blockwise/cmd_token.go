package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/api"
)

var tokenCmd = &cobra.Command{
	Use:   "token",
	Short: "Manage API tokens for TCP clients (works on the datastore directly)",
	Long: `Tokens authenticate API requests over TCP (TLS). Only their SHA-256 is
stored, in DATASTORE/tokens.json; "create" prints the secret once. A
running host sees changes at the next request.`,
}

func init() {
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a token and print its secret once", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error { return runTokenCreate(globals, a, cmd.OutOrStdout()) },
	}
	create.Flags().StringSliceVar(&tokenScopes, "scope", nil, "limit the token to a scope: replication (what a source host presents to its replication target; reaches /v1/replicas only)")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List tokens (no secrets)", Args: args(0, 0),
		RunE: func(cmd *cobra.Command, a []string) error { return runTokenList(globals, cmd.OutOrStdout()) },
	}
	revoke := &cobra.Command{
		Use: "revoke ID|NAME", Aliases: []string{"rm"}, Short: "Revoke a token", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error { return runTokenRevoke(globals, a, cmd.OutOrStdout()) },
	}
	tokenCmd.AddCommand(create, list, revoke)
	rootCmd.AddCommand(tokenCmd)
}

var tokenScopes []string

func runTokenCreate(g globalOptions, a []string, out io.Writer) error {
	t, secret, err := api.OpenTokens(g.Datastore).CreateScoped(a[0], tokenScopes)
	if errors.Is(err, api.ErrBadScope) {
		return &usageError{err}
	}
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, map[string]any{"id": t.ID, "name": t.Name, "created": t.Created, "secret": secret})
	}
	fmt.Fprintln(out, secret)
	return nil
}

func runTokenList(g globalOptions, out io.Writer) error {
	ts, err := api.OpenTokens(g.Datastore).List()
	if err != nil {
		return err
	}
	if g.JSON {
		if ts == nil {
			ts = []api.Token{}
		}
		return printJSON(out, ts)
	}
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{t.ID, t.Name, t.Created.Local().Format("2006-01-02 15:04:05")})
	}
	return table(out, "ID\tNAME\tCREATED", rows)
}

func runTokenRevoke(g globalOptions, a []string, out io.Writer) error {
	if err := api.OpenTokens(g.Datastore).Revoke(a[0]); err != nil {
		return err
	}
	if !g.JSON {
		fmt.Fprintf(out, "revoked %s\n", a[0])
	}
	return nil
}
