package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/client"
	"github.com/blockwise/blockwise/internal/backend/local"
	"github.com/blockwise/blockwise/internal/backup"
	"github.com/blockwise/blockwise/internal/nbd"
	"github.com/blockwise/blockwise/internal/repo"
	"github.com/blockwise/blockwise/internal/transport"
)

var demoCmd = &cobra.Command{
	Use:   "demo",
	Short: "Back up a disk twice (full, then CBT incremental) and restore it, on the default datastore and a local repository",
	Long: `demo runs the main job end to end on embedded defaults: it starts the host
(unless "blockwise serve" already runs on the datastore), creates a 1 GiB
disk "demo", writes 64 MiB through NBD, backs it up into DATASTORE/demo-repo
(password "demo"), changes 1% of its 64 KiB blocks, backs it up again
(incremental: CBT says what to read), restores the latest restore point to
DATASTORE/demo-restore.raw and checks it byte for byte against the disk,
then changes another 1% and rolls the disk back to that point in place,
writing only what CBT says changed.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		return runDemo(cmd.Context(), globals, cmd.OutOrStdout())
	},
}

func init() { rootCmd.AddCommand(demoCmd) }

const demoSize = 1 << 30

func runDemo(ctx context.Context, g globalOptions, out io.Writer) error {
	if err := os.MkdirAll(g.Datastore, 0o700); err != nil {
		return err
	}
	c, stop, err := demoHost(ctx, g, out)
	if err != nil {
		return err
	}
	defer stop()
	step := func(format string, a ...any) { fmt.Fprintf(out, "\n== "+format+"\n", a...) }
	if err := c.DeleteDisk(ctx, "demo"); err != nil && !errors.Is(err, client.ErrNotFound) {
		return err
	}
	if _, err := c.CreateDisk(ctx, client.CreateDiskRequest{Name: "demo", Size: demoSize}); err != nil {
		return err
	}
	step("created thin 1 GiB disk \"demo\"; writing 64 MiB of data, text and zeroes through NBD")
	live, err := demoDial(ctx, c, "")
	if err != nil {
		return err
	}
	defer live.Close()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	if err := demoFill(ctx, live, rng); err != nil {
		return err
	}
	r, err := demoRepo(ctx, g, out)
	if err != nil {
		return err
	}
	defer r.Close()
	// The demo reaches the host as blockwise backup and restore do: through
	// client/, the backup package and the transport modes, with their flags'
	// defaults.
	to := defaultTransportOptions()
	env, err := to.env(g)
	if err != nil {
		return err
	}
	if err := demoBackup(ctx, to, env, r, out, "first backup"); err != nil {
		return err
	}
	step("changing 1%% of the disk's 64 KiB blocks")
	if err := demoChange(ctx, live, rng); err != nil {
		return err
	}
	if err := demoBackup(ctx, to, env, r, out, "second backup"); err != nil {
		return err
	}
	if err := demoRestore(ctx, g, r, live, out); err != nil {
		return err
	}
	step("changing another 1%% of the blocks, then rolling the disk back in place (quick rollback)")
	if err := demoChange(ctx, live, rng); err != nil {
		return err
	}
	return demoRollback(ctx, to, env, r, live, out)
}

// demoRollback returns the disk to the latest restore point, writing only
// what CBT says changed since (as restore --rollback), and compares the
// disk with the point.
func demoRollback(ctx context.Context, to transportOptions, env transport.Env, r *repo.Repository, live *nbd.Client, out io.Writer) error {
	m, err := backup.FindPoint(ctx, r, "latest", "demo")
	if err != nil {
		return err
	}
	target, rep, err := transport.OpenTarget(ctx, to.Order, env, "demo")
	if err != nil {
		return err
	}
	defer target.Close()
	fmt.Fprintf(out, "   %s\n", rep)
	h := backup.ClientHost{C: env.Client}
	res, err := backup.Rollback(ctx, backup.RollbackOptions{Host: h, Disk: "demo", Repo: r, Manifest: m.ID, Target: target, ReadBack: true})
	if err != nil {
		return err
	}
	im, err := r.OpenImage(ctx, m.ID)
	if err != nil {
		return err
	}
	if err := demoCompare(ctx, live, imageTarget{im}); err != nil {
		return err
	}
	fmt.Fprintf(out, "   rolled back to %s in %s: CBT reported %d bytes changed since it; %d bytes written, %d chunks zeroed (holes in the point); the disk is identical to the point\n",
		m.ID.Short(), res.Duration.Round(time.Millisecond), res.ChangedBytes, res.BytesWritten, res.ZeroSlots)
	return nil
}

// imageTarget reads a restore point where demoCompare reads a target.
type imageTarget struct{ im *repo.Image }

// ReadAt reads the demo's reference image, for the restore's check.
func (t imageTarget) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := t.im.ReadAtContext(ctx, p, off)
	return err
}

// demoHost connects to a running host, or starts one in this process.
func demoHost(ctx context.Context, g globalOptions, out io.Writer) (*client.Client, func(), error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.ListDisks(ctx); err == nil {
		fmt.Fprintf(out, "using the running host at %s\n", g.hostURL())
		return c, func() {}, nil
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	// HashTree as serve's flag defaults it: the demo proves its points.
	o := serveOptions{NBDUnix: filepath.Join(g.Datastore, "nbd.sock"), HashTree: true, log: slog.New(slog.DiscardHandler)}
	go func() { done <- runServe(sctx, g, o) }()
	stop := func() { cancel(); <-done }
	for i := 0; ; i++ {
		if _, err = c.ListDisks(ctx); err == nil {
			break
		}
		select {
		case err := <-done:
			return nil, nil, fmt.Errorf("starting the host: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if i > 250 {
			stop()
			return nil, nil, fmt.Errorf("the host did not start: %w", err)
		}
	}
	fmt.Fprintf(out, "started a host on datastore %s\n", g.Datastore)
	return c, stop, nil
}

func demoDial(ctx context.Context, c *client.Client, snap string) (*nbd.Client, error) {
	ex, err := c.Exports(ctx, "demo", snap)
	if err != nil {
		return nil, err
	}
	if len(ex.URIs) == 0 {
		return nil, errors.New("the host offers no NBD URI")
	}
	return nbd.Dial(ctx, ex.URIs[0], nil)
}

// demoFill writes 64 MiB spread over the disk: random, text-like and
// explicit zeroes, like a guest file system would.
func demoFill(ctx context.Context, c *nbd.Client, rng *rand.Rand) error {
	text := bytes.Repeat([]byte("blockwise changed block tracking demo\n"), 2000)
	for i := 0; i < 64; i++ {
		p := make([]byte, 1<<20)
		switch i % 3 {
		case 0:
			rng.Read(p)
		case 1:
			copy(p, text)
		}
		off := int64(i) * (demoSize / 64)
		if err := c.WriteAt(ctx, p, off, false); err != nil {
			return err
		}
	}
	return c.Flush(ctx)
}

func demoChange(ctx context.Context, c *nbd.Client, rng *rand.Rand) error {
	for b := int64(0); b < demoSize/(64<<10); b++ {
		if rng.Intn(100) == 0 {
			p := make([]byte, 64<<10)
			rng.Read(p)
			if err := c.WriteAt(ctx, p, b*64<<10, false); err != nil {
				return err
			}
		}
	}
	return c.Flush(ctx)
}

func demoRepo(ctx context.Context, g globalOptions, out io.Writer) (*repo.Repository, error) {
	dir := filepath.Join(g.Datastore, "demo-repo")
	be, err := local.Open(dir)
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, be, "demo", repo.Options{})
	if errors.Is(err, repo.ErrNotFound) || errors.Is(err, repo.ErrInvalid) {
		fmt.Fprintf(out, "\n== creating an encrypted repository at %s (password \"demo\")\n", dir)
		r, err = repo.Init(ctx, be, "demo", repo.Options{})
	}
	return r, err
}

// demoBackup backs the demo disk up as blockwise backup does.
func demoBackup(ctx context.Context, to transportOptions, env transport.Env, r *repo.Repository, out io.Writer, title string) error {
	var rep transport.Report
	open := transport.Opener(to.Order, env, func(r transport.Report) { rep = r })
	res, err := backup.Run(ctx, backup.Options{Disk: "demo", Host: backup.ClientHost{C: env.Client}, Repo: r, Open: open})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== %s: restore point %s, %s", title, res.Manifest.ID.Short(), res.Mode)
	if res.Reason != "" {
		fmt.Fprintf(out, " (%s)", res.Reason)
	}
	fmt.Fprintf(out, "\n   CBT reported %d bytes, read %d (%s), stored %d new bytes, in %s\n",
		res.AreasBytes, res.ReadBytes, rep, res.Manifest.Stats.NewBytes, res.Duration.Round(time.Millisecond))
	switch {
	case res.RootProven:
		fmt.Fprintf(out, "   root %x: equals the host's root of the snapshot (the point is proven whole)\n", res.Root)
	case res.RootNote != "":
		fmt.Fprintf(out, "   no proven root: %s\n", res.RootNote)
	}
	return nil
}

func demoRestore(ctx context.Context, g globalOptions, r *repo.Repository, live *nbd.Client, out io.Writer) error {
	m, err := backup.FindPoint(ctx, r, "latest", "demo")
	if err != nil {
		return err
	}
	path := filepath.Join(g.Datastore, "demo-restore.raw")
	os.Remove(path)
	target, _, err := openTarget(ctx, restoreOptions{ToFile: path}, int64(m.Size))
	if err != nil {
		return err
	}
	defer target.Close()
	res, err := backup.Restore(ctx, backup.RestoreOptions{Repo: r, Manifest: m.ID, Target: target, TargetIsZero: true, ReadBack: true})
	if err != nil {
		return err
	}
	if err := demoCompare(ctx, live, target); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== restored %s to %s in %s: %d chunks read back and compared, identical to the disk\n",
		m.ID.Short(), path, res.Duration.Round(time.Millisecond), res.Verified)
	if res.RootVerified {
		fmt.Fprintf(out, "   the restored image hashes to the point's root %s\n", m.Tree.Root)
	}
	fmt.Fprintf(out, "   qemu-img compare -f raw -F raw %s %s\n", path, filepath.Join(g.Datastore, "demo", "flat.raw"))
	return nil
}

func demoCompare(ctx context.Context, live *nbd.Client, target interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
}) error {
	a, b := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < demoSize; off += int64(len(a)) {
		if err := live.ReadAt(ctx, a, off); err != nil {
			return err
		}
		if err := target.ReadAt(ctx, b, off); err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("restored image differs from the disk near offset %d", off)
		}
	}
	return nil
}
