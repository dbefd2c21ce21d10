package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/backend"
	"github.com/blockwise/blockwise/internal/repo"
)

var repoOpts repoOptions

var repoCmd = &cobra.Command{Use: "repo", Short: "Manage a backup repository"}

var repoInitCmd = &cobra.Command{
	Use:   "init",
	Short: "Create an encrypted repository (an empty password only with --insecure-no-password)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoInit(cmd.Context(), repoOpts, cmd.OutOrStdout())
	},
}

var repoCheckOpts checkOptions

var repoCheckCmd = &cobra.Command{
	Use:   "check",
	Short: "Verify indexes, packs and restore points (--read-data reads every pack)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runRepoCheck(cmd.Context(), repoCheckOpts, cmd.OutOrStdout())
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
	for _, c := range []*cobra.Command{repoInitCmd, repoInfoCmd} {
		addRepoFlags(c, &repoOpts)
	}
	addCompressionFlag(repoInitCmd, &repoOpts)
	addCheckFlags(repoCheckCmd, &repoCheckOpts)
	repoCmd.AddCommand(repoInitCmd, repoCheckCmd, repoInfoCmd)
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
	s, err := o.settings()
	if err != nil {
		return err
	}
	r, err := repo.Init(ctx, be, pw, repo.Options{InsecureNoPassword: o.InsecureNoPassword, Compression: s.Compression})
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(out, "created repository %s at %s\n", r.Config().ID, o.Repo)
	if o.InsecureNoPassword {
		fmt.Fprintln(out, "warning: the repository has an empty password: anyone who can read it can read its data ('repo key add' adds a password, 'repo key remove' then the empty one)")
	}
	return nil
}

var errCheckFailed = errors.New("repository check found errors")

// checkOptions: how much data check reads.
type checkOptions struct {
	repoOptions
	ReadData    bool
	Subset      string
	MetricsFile string
}

func addCheckFlags(cmd *cobra.Command, o *checkOptions) {
	addRepoFlags(cmd, &o.repoOptions)
	cmd.Flags().BoolVar(&o.ReadData, "read-data", false, "read and verify every pack")
	cmd.Flags().StringVar(&o.Subset, "read-data-subset", "", "read and verify only some packs: n/t (the n-th of t fixed groups: 1/7 ... 7/7 on seven days cover all) or x% (about x% at random)")
	cmd.Flags().StringVar(&o.MetricsFile, "metrics-file", "", "write the outcome as Prometheus metrics to this file (for node_exporter's textfile collector), atomically")
}

func runRepoCheck(ctx context.Context, o checkOptions, out io.Writer) error {
	co := repo.CheckOptions{ReadData: o.ReadData}
	mode := map[bool]string{false: "structure", true: "read-data"}[o.ReadData]
	if o.Subset != "" {
		sel, err := packSubset(o.Subset)
		if err != nil {
			return err
		}
		co.ReadData, co.ReadPack, mode = true, sel, "read-data-subset"
	}
	start := time.Now()
	res, err := checkRepo(ctx, o, co, out)
	if o.MetricsFile != "" {
		oc := checkOutcome{mode: mode, res: res, took: time.Since(start), at: time.Now()}
		if merr := writeCheckMetrics(o.MetricsFile, oc); merr != nil {
			err = errors.Join(err, fmt.Errorf("metrics file: %w", merr))
		}
	}
	return err
}

// checkRepo runs the check and prints its findings; res is nil when the
// check could not run at all.
func checkRepo(ctx context.Context, o checkOptions, co repo.CheckOptions, out io.Writer) (*repo.CheckResult, error) {
	r, err := o.openNoIndex(ctx) // check reads the index files itself, damaged ones too
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := r.Check(ctx, co)
	if res == nil || (err != nil && len(res.Errors) == 0) {
		return nil, err // the check itself could not run
	}
	printWarnings(out, res.Warnings)
	for _, e := range res.Errors {
		fmt.Fprintln(out, "error:", e)
	}
	fmt.Fprintf(out, "%d packs (%d read), %d restore points checked (%d roots proven from their data), %d errors, %d warnings\n",
		res.Packs, res.PacksRead, res.Manifests, res.RootsProven, len(res.Errors), len(res.Warnings))
	if slices.ContainsFunc(res.Errors, indexDamage) {
		fmt.Fprintln(out, incompleteHint)
	}
	if len(res.Errors) > 0 {
		return res, fmt.Errorf("%w: %d", errCheckFailed, len(res.Errors))
	}
	return res, nil
}

// packSubset parses --read-data-subset: "n/t" picks the packs whose ID,
// read as a number, is n-1 modulo t (fixed groups, so t runs cover every
// pack); "x%" picks about x% of them at random, differently each run.
func packSubset(spec string) (func(repo.ID) bool, error) {
	bad := &usageError{fmt.Errorf("--read-data-subset %q: want n/t (1 <= n <= t) or x%% (0 < x <= 100)", spec)}
	if pct, ok := strings.CutSuffix(spec, "%"); ok {
		x, err := strconv.ParseFloat(pct, 64)
		if err != nil || !(x > 0 && x <= 100) {
			return nil, bad
		}
		seed := maphash.MakeSeed()
		return func(id repo.ID) bool { return float64(maphash.Bytes(seed, id[:])%1e6) < x*1e4 }, nil
	}
	ns, ts, ok := strings.Cut(spec, "/")
	n, err1 := strconv.ParseUint(ns, 10, 32)
	t, err2 := strconv.ParseUint(ts, 10, 32)
	if !ok || err1 != nil || err2 != nil || n < 1 || n > t {
		return nil, bad
	}
	return repo.PackGroup(n, t), nil
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

// incompleteHint is the way out of an incomplete index, both halves: a
// lost index file is rebuilt by repair index, but what a lost pack held
// is gone, so after repair index reported missing or damaged packs only a
// new backup (which reads such areas again) and forgetting the damaged
// points end the errors.
const incompleteHint = "the repository's index is damaged or incomplete: 'blockwise repair index' rebuilds it from the packs. " +
	"If repair index already ran and reported missing or damaged packs, their data is gone: " +
	"'blockwise backup DISK' reads it again from the disk into a new point (or 'blockwise backup --full DISK' reads everything), " +
	"then 'blockwise forget' the points check still reports, and 'blockwise prune' runs again"

// indexDamage: an error that repair index can fix (a damaged index file,
// or blobs no index file names).
func indexDamage(err error) bool {
	return errors.Is(err, repo.ErrIncomplete)
}
