package main

import "github.com/spf13/cobra"

// helpGroups are the sections of `blockwise --help`, in order. The last
// holds the commands for trying blockwise out and diagnosing it, kept
// apart from daily use.
var helpGroups = []*cobra.Group{
	{ID: "disks", Title: "Disks and snapshots:"},
	{ID: "backup", Title: "Backup and restore:"},
	{ID: "repo", Title: "Repository:"},
	{ID: "host", Title: "Host:"},
	{ID: "site", Title: "Site recovery:"},
	{ID: "diag", Title: "Diagnostics and trying out:"},
}

// commandGroup is the help section of every top-level command.
var commandGroup = map[string]string{
	"disk": "disks", "snapshot": "disks", "changes": "disks", "export": "disks",
	"backup": "backup", "restore": "backup", "points": "backup", "forget": "backup", "serve-point": "backup", "recover": "backup",
	"ls": "backup", "dump": "backup", "mount": "backup",
	"repo": "repo", "check": "repo", "stats": "repo", "prune": "repo", "repair": "repo",
	"serve": "host", "token": "host", "ticket": "host",
	"replication": "site",
	"demo":        "diag", "read-test": "diag", "paths": "diag",
}

// groupCommands sorts root's commands into helpGroups (cobra's own help
// and completion stay under "Additional Commands", as would a command
// missing from commandGroup: TestHelpGroups fails on that).
func groupCommands(root *cobra.Command) {
	root.AddGroup(helpGroups...)
	for _, c := range root.Commands() {
		if id, ok := commandGroup[c.Name()]; ok {
			c.GroupID = id
		}
	}
}
