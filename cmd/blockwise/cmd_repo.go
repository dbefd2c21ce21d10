package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/repo"
)

var repoOpts repoOptions

var repoCmd = &cobra.Command{Use: "repo", Short: "Manage a backup repository"}

var repoInitCmd = &cobra.Command{
	Use:   "init",
	Short: "Create an encrypted repository",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoInit(cmd.Context(), repoOpts, cmd.OutOrStdout())
	},
}

var checkReadData bool

var repoCheckCmd = &cobra.Command{
	Use:   "check",
	Short: "Verify indexes, packs and restore points (--read-data reads every pack)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoCheck(cmd.Context(), repoOpts, checkReadData, cmd.OutOrStdout())
	},
}

var repoInfoCmd = &cobra.Command{
	Use:   "info",
	Short: "Show the repository's configuration and object counts",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoInfo(cmd.Context(), repoOpts, cmd.OutOrStdout())
	},
}

func init() {
	for _, c := range []*cobra.Command{repoInitCmd, repoCheckCmd, repoInfoCmd} {
		addRepoFlags(c, &repoOpts)
		repoCmd.AddCommand(c)
	}
	repoCheckCmd.Flags().BoolVar(&checkReadData, "read-data", false, "read and verify every pack")
	rootCmd.AddCommand(repoCmd)
}

func runRepoInit(ctx context.Context, o repoOptions, out io.Writer) error {
	pw, err := o.password()
	if err != nil {
		return err
	}
	be, err := o.backend(ctx)
	if err != nil {
		return err
	}
	r, err := repo.Init(ctx, be, pw, repo.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(out, "created repository %s at %s\n", r.Config().ID, o.Repo)
	return nil
}

var errCheckFailed = errors.New("repository check found errors")

func runRepoCheck(ctx context.Context, o repoOptions, readData bool, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	res, err := r.Check(ctx, readData)
	if res == nil || (err != nil && len(res.Errors) == 0) {
		return err // the check itself could not run
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(out, "warning:", w)
	}
	for _, e := range res.Errors {
		fmt.Fprintln(out, "error:", e)
	}
	fmt.Fprintf(out, "%d packs, %d restore points checked, %d errors, %d warnings\n", res.Packs, res.Manifests, len(res.Errors), len(res.Warnings))
	if len(res.Errors) > 0 {
		return fmt.Errorf("%w: %d", errCheckFailed, len(res.Errors))
	}
	return nil
}

type repoInfo struct {
	Backend string           `json:"backend"`
	Config  repo.Config      `json:"config"`
	Objects map[string]int   `json:"objects"`
	Bytes   map[string]int64 `json:"bytes"`
}

func runRepoInfo(ctx context.Context, o repoOptions, out io.Writer) error {
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	info := repoInfo{Backend: o.Repo, Config: r.Config(), Objects: map[string]int{}, Bytes: map[string]int64{}}
	for _, t := range []backend.FileType{backend.Data, backend.Index, backend.Manifests, backend.Keys, backend.Locks} {
		err := r.Backend().List(ctx, t, func(fi backend.FileInfo) error {
			info.Objects[string(t)]++
			info.Bytes[string(t)] += fi.Size
			return nil
		})
		if err != nil {
			return err
		}
	}
	if globals.JSON {
		return json.NewEncoder(out).Encode(info)
	}
	c := info.Config
	fmt.Fprintf(out, "backend %s\n", info.Backend)
	fmt.Fprintf(out, "repository %s (version %d), created %s\n", c.ID, c.Version, c.Created.Format("2006-01-02 15:04:05"))
	enc := "no"
	if c.Encrypted {
		enc = c.CipherName()
	}
	fmt.Fprintf(out, "chunk %d B, pack target %d B, %d slots per index page, compression %s, encryption %s\n",
		c.ChunkSize, c.PackSize, c.PageSlots, c.Compression, enc)
	for _, t := range []string{"data", "index", "manifests", "keys", "locks"} {
		fmt.Fprintf(out, "%-10s %6d objects %14d bytes\n", t, info.Objects[t], info.Bytes[t])
	}
	return nil
}

var (
	unlockOpts repoOptions
	unlockAll  bool
)

var repoUnlockCmd = &cobra.Command{
	Use:   "unlock",
	Short: "Remove stale locks (expired, or of dead processes on this host); --remove-all removes every lock",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		r, err := unlockOpts.open(cmd.Context())
		if err != nil {
			return err
		}
		defer r.Close()
		n, err := r.Unlock(cmd.Context(), unlockAll)
		fmt.Fprintf(cmd.OutOrStdout(), "removed %d lock(s)\n", n)
		return err
	},
}

func init() {
	addRepoFlags(repoUnlockCmd, &unlockOpts)
	repoUnlockCmd.Flags().BoolVar(&unlockAll, "remove-all", false, "remove every lock, live ones too")
	repoCmd.AddCommand(repoUnlockCmd)
}
