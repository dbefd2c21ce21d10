package main

import (
	"context"
	"io"

	"github.com/blockwise/blockwise/client"
)

// ask reaches the host and asks it one thing: the start of every command
// that shows or changes one object of the host (a policy, a group).
func ask[T any](g globalOptions, fn func(c *client.Client) (T, error)) (T, error) {
	c, err := g.client()
	if err != nil {
		var zero T
		return zero, err
	}
	return fn(c)
}

// printRows prints list as JSON (--json) or as a table: header, then
// one row per item.
func printRows[T any](g globalOptions, out io.Writer, list []T, header string, row func(T) []string) error {
	if g.JSON {
		return printJSON(out, list)
	}
	rows := make([][]string, 0, len(list))
	for _, v := range list {
		rows = append(rows, row(v))
	}
	return table(out, header, rows)
}

// waitTask waits for the task an action answered (none: nothing to wait
// for), after the action's own error.
func waitTask(ctx context.Context, c *client.Client, t *client.Task, err error) error {
	if err != nil || t == nil {
		return err
	}
	_, err = c.WaitTask(ctx, t.ID)
	return err
}
