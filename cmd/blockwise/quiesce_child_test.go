package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockwise/blockwise/internal/quiesce"
)

// quiesceChildEnv makes the test binary a process that freezes the guest
// through the agent socket named by it and then, inside the window,
// dies: "kill" by SIGKILL (nothing of it can thaw), "term" by SIGTERM
// (its context ends; the deferred thaw must run).
const quiesceChildEnv = "BLOCKWISE_TEST_QUIESCE_CHILD"

func quiesceChild() {
	mode, sock, _ := strings.Cut(os.Getenv(quiesceChildEnv), ":")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	o := quiesce.Options{Policy: quiesce.Require, Connect: func(ctx context.Context) (quiesce.Freezer, error) {
		return quiesce.DialAgent(ctx, sock)
	}}
	_, err := quiesce.Run(ctx, o, func(ctx context.Context) error {
		fmt.Println("frozen")
		os.Stdout.Sync()
		if mode == "kill" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		} else {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("no signal came")
		}
	})
	fmt.Println("returned:", err)
	os.Exit(3)
}

// runQuiesceChild runs the child and returns its output.
func runQuiesceChild(t *testing.T, mode, agentSock string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), quiesceChildEnv+"="+mode+":"+agentSock)
	out, _ := cmd.CombinedOutput()
	return string(out)
}
