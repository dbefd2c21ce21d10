package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/blockwise/blockwise/client"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	Datastore string
	JSON      bool
	Host      string // "" means unix://DATASTORE/api.sock
	Token     string
	CA        string
}

var globals globalOptions

func init() {
	f := rootCmd.PersistentFlags()
	f.StringVar(&globals.Datastore, "datastore", defaultDatastore(), "datastore directory (env BLOCKWISE_DATASTORE)")
	f.BoolVar(&globals.JSON, "json", false, "print JSON instead of tables")
	f.StringVar(&globals.Host, "host", os.Getenv("BLOCKWISE_HOST"), "host API: unix:///path/api.sock or https://host:port (env BLOCKWISE_HOST; default unix://DATASTORE/api.sock)")
	f.StringVar(&globals.Token, "token", os.Getenv("BLOCKWISE_TOKEN"), "bearer token for https hosts (env BLOCKWISE_TOKEN)")
	f.StringVar(&globals.CA, "ca", os.Getenv("BLOCKWISE_CA"), "PEM CA bundle trusted for the host's certificate (env BLOCKWISE_CA)")
}

// defaultDatastore: $BLOCKWISE_DATASTORE, else /var/lib/blockwise for root,
// else ~/.local/share/blockwise.
func defaultDatastore() string {
	if v := os.Getenv("BLOCKWISE_DATASTORE"); v != "" {
		return v
	}
	if os.Geteuid() == 0 {
		return "/var/lib/blockwise"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "blockwise")
	}
	return "blockwise-datastore"
}

// hostURL is where the CLI finds the host's API.
func (g globalOptions) hostURL() string {
	if g.Host != "" {
		return g.Host
	}
	abs, err := filepath.Abs(filepath.Join(g.Datastore, "api.sock"))
	if err != nil {
		abs = filepath.Join(g.Datastore, "api.sock")
	}
	return "unix://" + abs
}

func (g globalOptions) client() (*client.Client, error) {
	c, err := client.New(g.hostURL(), client.Options{Token: g.Token, CAFile: g.CA})
	if err != nil {
		return nil, &usageError{fmt.Errorf("--host: %w", err)}
	}
	return c, nil
}
