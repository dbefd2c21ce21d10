package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/repo"
)

// keyOptions: the repository and what the new key slot opens with.
type keyOptions struct {
	repoOptions
	NewPasswordFile string
	NewKeyFile      string
	// NewInsecureNoPassword: the new slot's password is empty, and meant
	// to be (restic's --new-insecure-no-password).
	NewInsecureNoPassword bool
}

var keyOpts keyOptions

var keyCmd = &cobra.Command{
	Use:   "key",
	Short: "Manage the passwords and key files that open a repository",
}

var keyAddCmd = &cobra.Command{
	Use:   "add",
	Short: "Add a password (--new-password-file or env BLOCKWISE_NEW_PASSWORD) or a new key file (--new-key-file)",
	Long: `Add a way to open the repository. A key file holds a 256-bit random
secret and opens the repository without the Argon2id key derivation a
password needs (about 0.1 s per command): use one for unattended backups,
keep it readable by the backup user only, and keep a password as well.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runKeyAdd(cmd.Context(), keyOpts, cmd.OutOrStdout())
	},
}

var keyListCmd = &cobra.Command{
	Use:   "list",
	Short: "List key slots",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runKeyList(cmd.Context(), globals, keyOpts.repoOptions, cmd.OutOrStdout())
	},
}

var keyRemoveCmd = &cobra.Command{
	Use:   "remove ID",
	Short: "Remove a key slot (never the last one), revoking its password or key file",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		return runKeyRemove(cmd.Context(), keyOpts.repoOptions, args[0], cmd.OutOrStdout())
	},
}

func init() {
	for _, c := range []*cobra.Command{keyAddCmd, keyListCmd, keyRemoveCmd} {
		addRepoFlags(c, &keyOpts.repoOptions)
		keyCmd.AddCommand(c)
	}
	keyAddCmd.Flags().StringVar(&keyOpts.NewPasswordFile, "new-password-file", "", "file holding the new password")
	keyAddCmd.Flags().BoolVar(&keyOpts.NewInsecureNoPassword, "new-insecure-no-password", false, "add an empty password (INSECURE: anyone who can read the repository can then read its data)")
	keyAddCmd.Flags().StringVar(&keyOpts.NewKeyFile, "new-key-file", "", "create this key file (mode 0600; it must not exist)")
	repoCmd.AddCommand(keyCmd)
}

func runKeyAdd(ctx context.Context, o keyOptions, out io.Writer) error {
	newPW, hasPW, err := newPassword(o)
	if err != nil {
		return err
	}
	if hasPW == (o.NewKeyFile != "") {
		return usageErrorf("give exactly one of --new-key-file and a new password (--new-password-file or BLOCKWISE_NEW_PASSWORD)")
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	if hasPW {
		if err := r.AddKey(ctx, repo.Secret{Password: newPW, InsecureNoPassword: o.NewInsecureNoPassword}, repo.KDFParams{}); err != nil {
			return err
		}
		fmt.Fprintln(out, "added a password")
		return nil
	}
	return addKeyFile(ctx, r, o.NewKeyFile, out)
}

// newPassword reads the new password of key add: refused when empty
// unless --new-insecure-no-password says so, which gives an empty one.
func newPassword(o keyOptions) (pw string, ok bool, err error) {
	pw, ok, err = readPassword(o.NewPasswordFile, "BLOCKWISE_NEW_PASSWORD")
	switch {
	case err != nil:
		return "", false, err
	case o.NewInsecureNoPassword && pw != "":
		return "", false, usageErrorf("--new-insecure-no-password, and a new password is given (--new-password-file or BLOCKWISE_NEW_PASSWORD): give one or the other")
	case o.NewInsecureNoPassword:
		return "", true, nil
	case ok && pw == "":
		return "", false, usageErrorf("%s: an empty new password is not allowed (anyone could read the repository); pass --new-insecure-no-password if that is meant", passwordSource(o.NewPasswordFile, "BLOCKWISE_NEW_PASSWORD"))
	}
	return pw, ok, nil
}

// addKeyFile writes the key file first (exclusively, 0600) and removes it
// if the repository refuses the slot, so a key file that exists works.
func addKeyFile(ctx context.Context, r *repo.Repository, path string, out io.Writer) error {
	text := repo.NewKeyFile()
	secret, err := repo.ParseKeyFile(text)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.AddKey(ctx, repo.Secret{KeyFile: secret}, repo.KDFParams{})
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	fmt.Fprintf(out, "created key file %s; it opens the repository with --key-file or BLOCKWISE_KEY_FILE\n", path)
	return nil
}

type keyRow struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	KDF  string `json:"kdf"`
}

func runKeyList(ctx context.Context, g globalOptions, o repoOptions, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	rows := make([]keyRow, 0, len(keys))
	for _, k := range keys {
		row := keyRow{ID: k.ID, Kind: "password", KDF: fmt.Sprintf("argon2id t=%d m=%dMiB p=%d", k.KDF.Time, k.KDF.Memory>>10, k.KDF.Threads)}
		if k.KeyFile {
			row.Kind, row.KDF = "key file", "none (256-bit secret)"
		}
		rows = append(rows, row)
	}
	if g.JSON {
		return printJSON(out, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tKDF")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID[:12], r.Kind, r.KDF)
	}
	return tw.Flush()
}

func runKeyRemove(ctx context.Context, o repoOptions, id string, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.RemoveKey(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed key %s\n", id)
	return nil
}
