// Command blockwise is the host daemon and operator CLI of blockwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/blockwise/blockwise/internal/repo"
)

var rootCmd = &cobra.Command{
	Use:           "blockwise",
	Short:         "Virtual disks with changed block tracking, snapshots and NBD",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	// BLOCKWISE_CPUPROFILE=FILE profiles one command (benchmarks use it).
	if p := os.Getenv("BLOCKWISE_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// BLOCKWISE_MEMPROFILE=FILE writes a heap profile of one command at
	// its end, with every allocation sampled (benchmarks use it).
	if p := os.Getenv("BLOCKWISE_MEMPROFILE"); p != "" {
		runtime.MemProfileRate = 64 << 10
		defer writeHeapProfile(p)
	}
	// BLOCKWISE_TRACE=FILE records a Go execution trace (go tool trace).
	if p := os.Getenv("BLOCKWISE_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil {
			trace.Start(f)
			defer trace.Stop()
		}
	}
	groupCommands(rootCmd)
	typeCobraErrors(rootCmd) // also refuseUnknownSubcommands
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blockwise:", err)
		if errors.Is(err, repo.ErrIncomplete) && !errors.Is(err, errCheckFailed) {
			fmt.Fprintln(os.Stderr, "blockwise: "+incompleteHint)
		}
		if errors.Is(err, repo.ErrReadOnly) {
			fmt.Fprintln(os.Stderr, "blockwise: the repository cannot be written: commands that only read it (restore, check, snapshots, stats, serve-point) run there with --no-lock, at a risk --help describes")
		}
		pprof.StopCPUProfile()
		os.Exit(exitCode(err))
	}
}

// writeHeapProfile writes the allocations profile to path (best effort:
// a benchmark's aid).
func writeHeapProfile(path string) {
	if f, err := os.Create(path); err == nil {
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
}
