package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestUnknownSubcommand: at every level of the command tree, the real
// binary refuses a subcommand it lacks with exit 2 and "unknown command"
// (cobra's groups below the root used to print their help and exit 0);
// the group alone still prints its help and succeeds.
func TestUnknownSubcommand(t *testing.T) {
	rootCmd.InitDefaultCompletionCmd() // main adds it too
	var groups [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.HasSubCommands() {
			groups = append(groups, path)
		}
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(rootCmd, nil)
	if len(groups) < 4 { // root, disk, repo, repo key at least
		t.Fatalf("command groups %v", groups)
	}
	for _, g := range groups {
		name := "blockwise " + strings.Join(g, " ")
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(binary, append(g, "frobnicate")...).CombinedOutput()
			if code := exitOf(err); code != exitUsage || !strings.Contains(string(out), `unknown command "frobnicate"`) {
				t.Errorf("%s frobnicate: exit %d: %s", name, code, out)
			}
			// Help on a command this version lacks fails the same way;
			// help on one it has succeeds.
			out, err = exec.Command(binary, append(append([]string{"help"}, g...), "frobnicate")...).CombinedOutput()
			if code := exitOf(err); code != exitUsage || !strings.Contains(string(out), "unknown help topic") {
				t.Errorf("blockwise help %s frobnicate: exit %d: %s", strings.Join(g, " "), code, out)
			}
			out, err = exec.Command(binary, append([]string{"help"}, g...)...).CombinedOutput()
			if code := exitOf(err); code != exitOK || !strings.Contains(string(out), "Usage:") {
				t.Errorf("blockwise help %s: exit %d: %s", strings.Join(g, " "), code, out)
			}
			if len(g) == 0 {
				return
			}
			out, err = exec.Command(binary, g...).CombinedOutput()
			if code := exitOf(err); code != exitOK || !strings.Contains(string(out), "Available Commands") {
				t.Errorf("%s alone: exit %d: %s", name, code, out)
			}
		})
	}
	out, err := exec.Command(binary, "disk", "creat").CombinedOutput()
	if exitOf(err) != exitUsage || !strings.Contains(string(out), "Did you mean this?\n\tcreate") {
		t.Errorf("disk creat: %v: %s", err, out)
	}
}

// TestRefuseUnknownSubcommands: in process, on a tree of its own, a
// group at any depth refuses an unknown subcommand with a usage error and
// runs a known one; a command that runs itself is left alone.
func TestRefuseUnknownSubcommands(t *testing.T) {
	ran := ""
	leaf := func(name string) *cobra.Command {
		return &cobra.Command{Use: name, RunE: func(*cobra.Command, []string) error { ran = name; return nil }}
	}
	root := &cobra.Command{Use: "top", SilenceErrors: true, SilenceUsage: true}
	mid := &cobra.Command{Use: "mid"}
	low := &cobra.Command{Use: "low"}
	low.AddCommand(leaf("x"))
	mid.AddCommand(low, leaf("y"))
	root.AddCommand(mid)
	refuseUnknownSubcommands(root)
	for _, tc := range []struct {
		args []string
		code int
		ran  string
	}{
		{[]string{"mid", "nope"}, exitUsage, ""},
		{[]string{"mid", "low", "nope"}, exitUsage, ""},
		{[]string{"nope"}, exitUsage, ""},
		{[]string{"mid", "low", "x"}, exitOK, "x"},
		{[]string{"mid", "y", "extra"}, exitOK, "y"}, // a leaf's own Args decide
		{[]string{"mid"}, exitOK, ""},
	} {
		ran = ""
		root.SetArgs(tc.args)
		root.SetOut(new(strings.Builder))
		err := root.Execute()
		if code := exitCode(err); code != tc.code || ran != tc.ran {
			t.Errorf("%v: exit %d (%v), ran %q; want exit %d, ran %q", tc.args, code, err, ran, tc.code, tc.ran)
		}
	}
}
