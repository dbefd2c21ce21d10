package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// refuseUnknownSubcommands makes every command group (a command that only
// holds subcommands, such as "disk" or "repo key") fail with a usage
// error (exit 2) when called with an argument that names no subcommand.
// Cobra checks only the root's subcommand names, untyped: a group below it accepts any
// arguments, prints its help and exits 0, so a script calling a
// subcommand this version lacks would see success. Called once, before
// Execute, so that it sees every command the package's init functions
// added, cobra's own "completion" group included.
func refuseUnknownSubcommands(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.HasSubCommands() && !c.Runnable() && (c.HasParent() || c.Args == nil) {
			c.Args = knownSubcommand
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
	}
	walk(root)
}

// knownSubcommand is the Args check of a command group: no argument (its
// help is printed) or else an error naming the unknown command, with
// cobra's suggestions, as the root gives.
func knownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return &usageError{errors.New(msg)}
}

// helpCommand replaces cobra's help command, which prints "Unknown help
// topic" for a command this version lacks and exits 0: a script asking
// for help on it must see exit 2, as running it does.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageErrorf("unknown help topic %q: %s", strings.Join(args, " "), "run 'blockwise --help' for the commands")
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}
