package main

import (
	"os"
	"path/filepath"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	Datastore string
	JSON      bool
}

var globals globalOptions

func init() {
	f := rootCmd.PersistentFlags()
	f.StringVar(&globals.Datastore, "datastore", defaultDatastore(), "datastore directory (env BLOCKWISE_DATASTORE)")
	f.BoolVar(&globals.JSON, "json", false, "print JSON instead of tables")
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
