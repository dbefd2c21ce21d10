package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// typeCobraErrors makes every error cobra itself returns about how a
// command was called a usageError, where cobra makes it, so that
// exitCode never needs to read an error's text (syscall.EINVAL's text is
// "invalid argument", as is pflag's). In one walk of the command tree:
//
//   - flag parse errors go through root's FlagErrorFunc, which cobra
//     inherits down the tree;
//   - every command's Args validator (and cobra's required-flag and
//     flag-group checks, run there first) is wrapped;
//   - the root, whose unknown-subcommand check cobra makes only while
//     its Args is nil (legacyArgs, untyped), gets knownSubcommand and a
//     RunE printing its help, as before.
//
// Called once, before Execute, so that it sees every command the
// package's init functions added, cobra's own help and completion
// commands included; commands added later would escape it.
func typeCobraErrors(root *cobra.Command) {
	root.SetHelpCommand(helpCommand()) // before InitDefaultHelpCmd adds cobra's
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	refuseUnknownSubcommands(root)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Args = typedArgs(c.Args)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// typedArgs wraps a command's Args validator (nil: any arguments) so its
// errors, and those of cobra's required-flag and flag-group checks,
// are usage errors. Cobra runs those checks again after PreRun; by then
// they pass.
func typedArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if check != nil {
			if err := check(c, args); err != nil {
				return asUsage(err)
			}
		}
		if err := c.ValidateRequiredFlags(); err != nil {
			return asUsage(err)
		}
		return asUsage(c.ValidateFlagGroups())
	}
}

// asUsage makes err a usageError (nil stays nil).
func asUsage(err error) error {
	var ue *usageError
	if err == nil || errors.As(err, &ue) {
		return err
	}
	return &usageError{err}
}
