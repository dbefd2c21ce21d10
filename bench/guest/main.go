// Command guest helps bench/qemu.sh drive a test guest started by
// libvirt: `guest initramfs OUT` writes the testvm initramfs (with the
// guest agent), `guest kernel` prints the kernel's path and command
// line, `guest run SOCK SCRIPT` runs a script in the guest through its
// shell socket and prints the output.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/blockwise/blockwise/internal/testvm"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "guest:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: guest initramfs OUT | kernel | run SOCK SCRIPT")
	}
	switch {
	case args[0] == "initramfs" && len(args) == 2:
		return testvm.BuildInitramfs(args[1], testvm.Options{GuestAgent: true})
	case args[0] == "kernel":
		k, err := testvm.Kernel()
		if err != nil {
			return err
		}
		fmt.Printf("%s\n%s\n", k, testvm.KernelCmdline)
		return nil
	case args[0] == "run" && len(args) == 3:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		sh, err := testvm.DialShell(ctx, args[1])
		if err != nil {
			return err
		}
		defer sh.Close()
		out, err := sh.Run(ctx, args[2])
		fmt.Print(out)
		return err
	}
	return fmt.Errorf("unknown command %q", args)
}
