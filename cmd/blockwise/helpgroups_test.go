package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestHelpGroups: `blockwise --help` shows the command groups in order,
// every command of the binary in a group of its own (none left under
// "Additional Commands" but cobra's help and completion), and demo,
// read-test and paths apart under "Diagnostics and trying out:".
func TestHelpGroups(t *testing.T) {
	b, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v: %s", err, b)
	}
	sections := map[string][]string{} // title -> command names
	var order []string
	title := ""
	cmdLine := regexp.MustCompile(`^  (\S+)\s`)
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " "):
			title = line
			order = append(order, title)
		case line == "":
			title = ""
		case title != "":
			if m := cmdLine.FindStringSubmatch(line); m != nil && !strings.HasPrefix(m[1], "-") {
				sections[title] = append(sections[title], m[1])
			}
		}
	}
	var want []string
	for _, g := range helpGroups {
		want = append(want, g.Title)
	}
	want = append(want, "Additional Commands:")
	if len(order) < len(want)+1 || strings.Join(order[1:len(want)+1], "|") != strings.Join(want, "|") { // order[0] is "Usage:"
		t.Fatalf("sections %q, want %q:\n%s", order, want, b)
	}
	if got := strings.Join(sections["Diagnostics and trying out:"], " "); got != "demo paths read-test" {
		t.Errorf("diagnostics group: %q", got)
	}
	if got := strings.Join(sections["Additional Commands:"], " "); got != "completion help" {
		t.Errorf("ungrouped commands: %q (add them to commandGroup)", got)
	}
	n := 0
	for _, g := range helpGroups {
		if len(sections[g.Title]) == 0 {
			t.Errorf("group %q is empty", g.Title)
		}
		n += len(sections[g.Title])
	}
	if n != len(commandGroup) {
		t.Errorf("%d grouped commands in --help, commandGroup names %d", n, len(commandGroup))
	}
}
